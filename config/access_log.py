"""gunicorn's access and error log with email addresses masked, like Django's own log lines
(config.security.MaskEmailsFilter): a contacts search by email puts the address in the URL
(`/contacts/?q=ann%40example.com`), and the access log would otherwise keep it.
gunicorn.conf.py (read by gunicorn from the working directory) names this class."""

from gunicorn.glogging import Logger

from config.security import MaskEmailsFilter, mask_emails


class MaskingGunicornLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {
            name: mask_emails(value) if isinstance(value, str) else value
            for name, value in atoms.items()
        }

    def setup(self, cfg):
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.addFilter(MaskEmailsFilter())
