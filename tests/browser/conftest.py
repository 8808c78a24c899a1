import importlib

import pytest
from django.apps import apps as django_apps

groups_migration = importlib.import_module("conversions.migrations.0002_groups")


class _CurrentApps:
    """The live app registry as the data migration expects it, minus the permission
    creation step: the flush that ends each transactional test has already re-created the
    permissions (post_migrate), only the groups are gone."""

    def get_app_configs(self):
        return []

    def get_model(self, app_label, model_name):
        return django_apps.get_model(app_label, model_name)


@pytest.fixture(autouse=True)
def role_groups(transactional_db):
    # A transactional test's flush removes the Viewer, Editor and Publisher groups that the
    # data migration made; the users of these tests need them back, with their permissions.
    groups_migration.create_groups(_CurrentApps(), None)
