# django-simple-history ships no type information. Its admin base class is a ModelAdmin (as in
# simple_history/admin.py); typed here so our admin classes keep their model's type.
from typing import TypeVar

from django.contrib import admin
from django.db.models import Model

_ModelT = TypeVar("_ModelT", bound=Model)

class SimpleHistoryAdmin(admin.ModelAdmin[_ModelT]): ...
