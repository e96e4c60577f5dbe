"""Read a Mids Reborn export (directory, .zip or .tar.gz) as validated source records."""

from events.mids import KINDS, Kind
from importer.archive import Export, open_export
from importer.errors import ImportInputError
from importer.limits import ReadLimits
from importer.source import DuplicateKey, ExportHeader, ExportReader, SourceRecord, read_export

__all__ = [
    "KINDS",
    "DuplicateKey",
    "Export",
    "ExportHeader",
    "ExportReader",
    "ImportInputError",
    "Kind",
    "ReadLimits",
    "SourceRecord",
    "open_export",
    "read_export",
]
