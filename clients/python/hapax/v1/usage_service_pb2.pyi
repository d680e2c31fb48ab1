from hapax.v1 import completion_service_pb2 as _completion_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UsageGroup(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_GROUP_UNSPECIFIED: _ClassVar[UsageGroup]
    USAGE_GROUP_DAY: _ClassVar[UsageGroup]
    USAGE_GROUP_KEY: _ClassVar[UsageGroup]
    USAGE_GROUP_TEAM: _ClassVar[UsageGroup]
    USAGE_GROUP_MODEL: _ClassVar[UsageGroup]
    USAGE_GROUP_PROVIDER: _ClassVar[UsageGroup]
USAGE_GROUP_UNSPECIFIED: UsageGroup
USAGE_GROUP_DAY: UsageGroup
USAGE_GROUP_KEY: UsageGroup
USAGE_GROUP_TEAM: UsageGroup
USAGE_GROUP_MODEL: UsageGroup
USAGE_GROUP_PROVIDER: UsageGroup

class GetUsageRequest(_message.Message):
    __slots__ = ("start_day", "end_day", "key_id", "team", "model", "provider", "group_by")
    START_DAY_FIELD_NUMBER: _ClassVar[int]
    END_DAY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    start_day: str
    end_day: str
    key_id: str
    team: str
    model: str
    provider: str
    group_by: _containers.RepeatedScalarFieldContainer[UsageGroup]
    def __init__(self, start_day: _Optional[str] = ..., end_day: _Optional[str] = ..., key_id: _Optional[str] = ..., team: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., group_by: _Optional[_Iterable[_Union[UsageGroup, str]]] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("rows", "budgets")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    budgets: _containers.RepeatedCompositeFieldContainer[BudgetStatus]
    def __init__(self, rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ..., budgets: _Optional[_Iterable[_Union[BudgetStatus, _Mapping]]] = ...) -> None: ...

class BudgetStatus(_message.Message):
    __slots__ = ("name", "key_id", "team", "window", "window_start", "unit", "limit", "spent", "reserved", "remaining")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    name: str
    key_id: str
    team: str
    window: str
    window_start: str
    unit: str
    limit: int
    spent: int
    reserved: int
    remaining: int
    def __init__(self, name: _Optional[str] = ..., key_id: _Optional[str] = ..., team: _Optional[str] = ..., window: _Optional[str] = ..., window_start: _Optional[str] = ..., unit: _Optional[str] = ..., limit: _Optional[int] = ..., spent: _Optional[int] = ..., reserved: _Optional[int] = ..., remaining: _Optional[int] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("day", "key_id", "team", "model", "provider", "calls", "errors", "prompt_tokens", "completion_tokens", "cached_prompt_tokens", "reasoning_tokens", "cost", "unpriced_calls", "energy_joules", "shared_calls", "cache_hits", "saved_cost", "saved_tokens")
    DAY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_CALLS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_JOULES_FIELD_NUMBER: _ClassVar[int]
    SHARED_CALLS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    SAVED_COST_FIELD_NUMBER: _ClassVar[int]
    SAVED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    day: str
    key_id: str
    team: str
    model: str
    provider: str
    calls: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    reasoning_tokens: int
    cost: _completion_service_pb2.Cost
    unpriced_calls: int
    energy_joules: float
    shared_calls: int
    cache_hits: int
    saved_cost: _completion_service_pb2.Cost
    saved_tokens: int
    def __init__(self, day: _Optional[str] = ..., key_id: _Optional[str] = ..., team: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., calls: _Optional[int] = ..., errors: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., cost: _Optional[_Union[_completion_service_pb2.Cost, _Mapping]] = ..., unpriced_calls: _Optional[int] = ..., energy_joules: _Optional[float] = ..., shared_calls: _Optional[int] = ..., cache_hits: _Optional[int] = ..., saved_cost: _Optional[_Union[_completion_service_pb2.Cost, _Mapping]] = ..., saved_tokens: _Optional[int] = ...) -> None: ...
