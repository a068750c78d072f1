"""The errors a user can cause. The CLI prints each as one line and exits with code 2."""
from space.errors import GenotypeError

from .data import DataError


class UserError(Exception):
    """A bad flag, an unknown study, an unreadable storage: one line naming the fix."""


USER_ERRORS = (GenotypeError, DataError, UserError)
