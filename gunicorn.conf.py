# gunicorn reads this file from the working directory (the Procfile's web process runs from
# the checkout): its access and error lines mask email addresses (config/access_log.py).
logger_class = "config.access_log.MaskingGunicornLogger"
