"""Errors of the Cinder side: each message names the operation and what it acted on.

The CLI prints ``str(error)`` on one line; nothing here should ever need a traceback
to be understood.
"""


class CinderExtError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(CinderExtError):
    """The configuration is incomplete or contradictory."""


class CephError(CinderExtError):
    """A Ceph call failed; ``op``, ``pool`` and ``image`` say which one."""

    def __init__(self, message, op=None, pool=None, image=None, errno=None):
        super().__init__(message)
        self.op, self.pool, self.image, self.errno = op, pool, image, errno


class CephPermissionDenied(CephError):
    """The Ceph user lacks the caps for the operation."""


class CephNotFound(CephError):
    """The pool, image or snapshot does not exist."""


class CephExists(CephError):
    """The image or snapshot already exists."""


class CephBusy(CephError):
    """The image is in use, has children or snapshots that block the operation."""


class CephTimeout(CephError):
    """Ceph did not answer within the configured timeout."""


class GlanceError(CinderExtError):
    """Glance answered with an error, or did not answer."""

    def __init__(self, message, status=None, op=None):
        super().__init__(message)
        self.status, self.op = status, op


class GlanceForbidden(GlanceError):
    """401 or 403: the credentials may not do this."""


class GlanceNotFound(GlanceError):
    """404."""


class GlanceConflict(GlanceError):
    """409: the image is not in a state that allows the call."""


class GlanceTimeout(GlanceError):
    """No answer, or the image did not reach the expected state, within the bound."""


class CloneFailed(CinderExtError):
    """The clone transaction failed and was rolled back (``cleaned`` says whether fully)."""

    def __init__(self, message, reason, cleaned=True, cause=None):
        super().__init__(message)
        self.reason, self.cleaned, self.cause = reason, cleaned, cause


class CloneIncomplete(CinderExtError):
    """The clone cannot be rolled back safely (Glance may reference it); a retry finishes it."""


class VolumeBusy(CinderExtError):
    """The volume cannot be deleted now (Cinder snapshots, a clone made meanwhile); nothing changed."""


class CreateFailed(CinderExtError):
    """Creating a volume from an image failed; ``cleaned`` says whether the attempt was undone."""

    def __init__(self, message, cleaned=True):
        super().__init__(message)
        self.cleaned = cleaned


class UploadInProgress(CinderExtError):
    """Another live upload to the same image id holds its lock; nothing was done."""


class VolumeLocked(VolumeBusy):
    """An upload (shared) or a delete (exclusive) of the volume holds its lock and did not let
    go in time, or a delete removed the volume first; nothing was changed. A VolumeBusy: a
    delete that meets it must leave the volume as it was (Cinder: VolumeIsBusy)."""


class LocationRefused(GlanceError):
    """Glance's location task for this attempt's location ended in failure: the location
    will not be registered (a definite answer, unlike a timeout or a 5xx)."""
