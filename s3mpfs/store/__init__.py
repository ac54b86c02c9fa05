"""Object stores: the ObjectStore protocol and its implementations."""

from s3mpfs.store.base import Data, ListPage, ObjectInfo, ObjectStore, PartInfo, UploadInfo

__all__ = ["Data", "ListPage", "ObjectInfo", "ObjectStore", "PartInfo", "UploadInfo"]
