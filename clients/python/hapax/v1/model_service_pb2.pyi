from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "default_model", "default_embedding_model")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    default_model: str
    default_embedding_model: str
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., default_model: _Optional[str] = ..., default_embedding_model: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "routes", "capabilities")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    routes: _containers.RepeatedCompositeFieldContainer[ModelRoute]
    capabilities: Capabilities
    def __init__(self, name: _Optional[str] = ..., routes: _Optional[_Iterable[_Union[ModelRoute, _Mapping]]] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ...) -> None: ...

class ModelRoute(_message.Message):
    __slots__ = ("provider", "provider_type", "upstream_model", "rank", "capabilities")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_MODEL_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    provider: str
    provider_type: str
    upstream_model: str
    rank: int
    capabilities: Capabilities
    def __init__(self, provider: _Optional[str] = ..., provider_type: _Optional[str] = ..., upstream_model: _Optional[str] = ..., rank: _Optional[int] = ..., capabilities: _Optional[_Union[Capabilities, _Mapping]] = ...) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("streaming", "tools", "images", "json_schema", "embeddings", "image_urls", "image_s3_uris", "image_gs_uris")
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    JSON_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URLS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_S3_URIS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_GS_URIS_FIELD_NUMBER: _ClassVar[int]
    streaming: bool
    tools: bool
    images: bool
    json_schema: bool
    embeddings: bool
    image_urls: bool
    image_s3_uris: bool
    image_gs_uris: bool
    def __init__(self, streaming: _Optional[bool] = ..., tools: _Optional[bool] = ..., images: _Optional[bool] = ..., json_schema: _Optional[bool] = ..., embeddings: _Optional[bool] = ..., image_urls: _Optional[bool] = ..., image_s3_uris: _Optional[bool] = ..., image_gs_uris: _Optional[bool] = ...) -> None: ...
