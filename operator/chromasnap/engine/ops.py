"""Write operations: the unit that writers record, deltas carry and compactors fold.

An ``Op`` is one record-level change, as a Chroma client would send it. Its
``OpKey`` (write timestamp, writer id, sequence) gives the total order that
every component uses to resolve conflicts (last writer wins).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

#: chromadb's metadata values: scalars, and non-empty lists of one scalar type
#: (filtered with ``$contains`` / ``$not_contains``); None removes a key in update/upsert.
MetadataValue = str | int | float | bool | list[str] | list[int] | list[float] | list[bool] | None
Metadata = dict[str, MetadataValue]
Embedding = npt.NDArray[np.float32]


class OpKind(IntEnum):
    """Chroma's four write verbs (values are stored in deltas: never renumber)."""

    ADD = 0
    UPSERT = 1
    UPDATE = 2
    DELETE = 3
    #: ``delete(where=..., where_document=..., ids=...)``: one op for the whole request,
    #: its ``filter`` says what it deletes. It names no record (``id`` is ``""``): the
    #: records it deletes are found where the state is (``merge.expand_filtered_deletes``).
    DELETE_WHERE = 4


#: The kinds that name one record: all but ``DELETE_WHERE``.
RECORD_KINDS = (OpKind.ADD, OpKind.UPSERT, OpKind.UPDATE, OpKind.DELETE)


@dataclass(frozen=True)
class DeleteFilter:
    """What a filtered delete removes: the records that match, at its place in the order.

    ``where``/``where_document`` are Chroma filters (already validated); ``ids``,
    when given, limits the delete to those ids (Chroma deletes the ids that match).
    ``limit``, when given, removes only the first ``limit`` matching records in
    Chroma's order (its ``get(where=..., limit=...)`` order: storage order).
    """

    where: dict[str, Any] | None = None
    where_document: dict[str, Any] | None = None
    ids: tuple[str, ...] | None = None
    limit: int | None = None


class OpKey(NamedTuple):
    """Total order of writes: write time, then writer id, then the writer's sequence."""

    ts_us: int
    writer: str
    seq: int


@dataclass(frozen=True)
class Op:
    """One record-level write.

    ``embedding``/``document``/``metadata`` are ``None`` when the client did not
    send them (meaningful for update and upsert: the field is left as it was).
    In ``metadata`` a ``None`` value removes that key (Chroma's update rule).
    ``filter`` is set exactly for ``DELETE_WHERE`` ops.
    """

    kind: OpKind
    id: str
    key: OpKey
    embedding: Embedding | None = None
    document: str | None = None
    metadata: Metadata | None = None
    uri: str | None = None
    filter: DeleteFilter | None = None
