"""The errors a user can cause. The CLI prints each as one line and exits with code 2
(explorer.commands.USER_ERRORS adds the genotype grammar's GenotypeError)."""


class DataError(Exception):
    """A dataset that can't be had or read: one line saying what to do."""


class UserError(Exception):
    """A bad flag, an unknown study, an unreadable storage: one line naming the fix."""
