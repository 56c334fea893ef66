from django.db import models


class Signup(models.Model):
    email = models.EmailField()
    domain = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
