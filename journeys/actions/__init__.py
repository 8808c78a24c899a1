"""Every write of the journeys app that matters, one module per family (Zulip's
`zerver/actions/`): each function is one transaction, keyword-only and typed, and its
docstring names the locks it takes and why running it twice is safe.

- `api_keys`: create, revoke and authenticate API keys
- `versions`: create journeys, save drafts, publish versions
- `contacts`: contacts in (upsert) and out (erasure)
- `events`: events in (ingestion) and matched (triggers, exits, event conversions)
- `enrollments`: enroll, advance due enrollments through the engine, retry failed ones
- `messages`: deliver due outbox messages
- `sweep`: find due work whatever messages were lost; run it all in one process

Callers import from the module (`from journeys.actions.versions import publish_version`).
"""
