from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('policies', '0003_egress_plain_http'),
    ]

    operations = [
        migrations.AddField(
            model_name='egresspolicy',
            name='tcp',
            field=models.JSONField(blank=True, default=list),
        ),
    ]
