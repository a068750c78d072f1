"""What explore's commands do, from flags to results: cli.py parses the flags and calls these."""
from space.errors import GenotypeError

from ..base.errors import DataError, UserError

USER_ERRORS = (GenotypeError, DataError, UserError)  # each is printed as one line, exit code 2
