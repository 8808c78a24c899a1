"""The Viewer, Editor and Publisher groups, with the permissions their names say."""

from django.db import migrations

VIEWED = {
    "journeys": ["contact", "event", "journey", "journeyversion", "step", "enrollment",
                 "stepvisit", "outboxmessage"],
    "conversions": ["conversion", "goal", "revision", "goalachievement", "conversionaward"],
}
EDITED = {
    "journeys": ["journey", "journeyversion", "step", "contact"],
    "conversions": ["conversion", "goal", "revision"],
}


def create_groups(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after migrate; the groups need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")

    def perms(actions, models_by_app):
        codenames = [
            f"{action}_{model}"
            for models in models_by_app.values()
            for model in models
            for action in actions
        ]
        return list(Permission.objects.filter(
            content_type__app_label__in=list(models_by_app), codename__in=codenames
        ))

    viewing = perms(["view"], VIEWED)
    editing = perms(["add", "change", "delete"], EDITED)
    publishing = list(Permission.objects.filter(
        content_type__app_label="journeys", codename="publish_journey"
    ))
    for name, granted in [
        ("Viewer", viewing),
        ("Editor", viewing + editing),
        ("Publisher", viewing + editing + publishing),
    ]:
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(granted)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(
        name__in=["Viewer", "Editor", "Publisher"]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("journeys", "0001_initial"),
        ("conversions", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
