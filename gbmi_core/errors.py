"""Errors the core raises.  Each names its cause in one line; the CLI prints that line and exits 1."""


class GbmiError(Exception):
    """Base class: the CLI prints ``str(error)`` without a traceback (unless ``--debug``)."""


class UnknownName(GbmiError, LookupError):
    """A task, strategy or preset name that is not registered; the message lists close matches."""


class DuplicateName(GbmiError):
    """Two plugins registered the same task or strategy name."""


class PluginLoadError(GbmiError):
    """A plugin failed to import or register (raised only with ``GBMI_STRICT_PLUGINS=1``)."""


class ConfigError(GbmiError, ValueError):
    """A config (file or dict) has an unknown, missing or ill-typed field."""


class ModelRefused(GbmiError, ValueError):
    """A model a strategy cannot handle: the message names the reason."""


class CertificateRejected(GbmiError, ValueError):
    """A certificate that does not match its model or its strategy."""


class NotApplicable(GbmiError, ValueError):
    """A figure that does not apply to what it was asked to draw (say, a certificate table of a strategy
    without certificates): ``gbmi explain`` skips it, naming why, and draws the rest."""


class StoreError(GbmiError):
    """A problem with the store itself (unwritable location, bad layout)."""


class CorruptEntry(StoreError):
    """A store entry that fails its checksum or cannot be read."""


class TooLarge(GbmiError):
    """A computation refused up front because it is too large for this machine; a sweep reports it as
    refused, not failed."""


class MemoryRefused(TooLarge, MemoryError):
    """A computation that would need more memory than the budget allows: the message names both."""
