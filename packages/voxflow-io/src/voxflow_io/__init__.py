"""voxflow-io: open and write large bio-image volumes lazily.

Readers: Zarr v2/v3, OME-Zarr (NGFF 0.4/0.5), TIFF (stacks, tiled, BigTIFF, OME, ImageJ),
slice folders and ``.npy``, all behind one [Volume][voxflow_io.Volume]. Writers: OME-Zarr images
with pyramids and HCS plates, chunk-aligned so that many processes can write one store. Zarr
stores are also read and written at object-store URLs (``s3://``, ``gs://``, ``http(s)://`` read
only) with fsspec ``storage_options``.
"""

from importlib.metadata import version

from ._discover import DatasetRecord, discover_dataset
from ._errors import (
    CorruptVolumeError,
    DatasetLayoutError,
    FinishedStoreError,
    ForkedProcessError,
    ImageTooLargeError,
    IncompleteStoreError,
    LevelOutOfRangeError,
    MetadataError,
    ParameterError,
    RemoteStoreError,
    StoreExistsError,
    UnsupportedFormatError,
    VolumeNotFoundError,
    VoxflowIOError,
    WindowError,
)
from ._open import open_volume
from ._plate import Plate, PlatePosition, create_plate, open_plate
from ._pyramid import downsample
from ._remote import zarr_store
from ._validate import DEFAULT_MAX_DECODED_BYTES
from ._volume import Volume, VolumeInfo
from ._write import OmeZarrWriter, create_ome_zarr

__version__ = version("voxflow-io")

__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "CorruptVolumeError",
    "DatasetLayoutError",
    "DatasetRecord",
    "FinishedStoreError",
    "ForkedProcessError",
    "ImageTooLargeError",
    "IncompleteStoreError",
    "LevelOutOfRangeError",
    "MetadataError",
    "OmeZarrWriter",
    "ParameterError",
    "Plate",
    "PlatePosition",
    "RemoteStoreError",
    "StoreExistsError",
    "UnsupportedFormatError",
    "Volume",
    "VolumeInfo",
    "VolumeNotFoundError",
    "VoxflowIOError",
    "WindowError",
    "__version__",
    "create_ome_zarr",
    "create_plate",
    "discover_dataset",
    "downsample",
    "open_plate",
    "open_volume",
    "zarr_store",
]
