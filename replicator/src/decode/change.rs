//! Row changes: Insert, Update, Delete and Truncate.

use super::error::DecodeErrorKind;
use super::reader::{Reader, Result};
use super::tuple::{read_new_tuple, read_old_tuple, read_tuple, OldTuple, TupleData};
use super::tuple::{KEY_TUPLE_TAG, NEW_TUPLE_TAG, OLD_TUPLE_TAG};

/// `I`: a new row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InsertBody {
    pub relation_id: u32,
    pub new: TupleData,
}

/// `U`: a changed row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateBody {
    pub relation_id: u32,
    /// The old key (`K`) when the key changed, or the whole old row (`O`) under
    /// `REPLICA IDENTITY FULL`; `None` when the key did not change.
    pub old: Option<OldTuple>,
    /// The new row; unchanged TOASTed columns are [`TupleValue::UnchangedToast`](super::TupleValue::UnchangedToast).
    pub new: TupleData,
}

/// `D`: a deleted row, identified by its old key (`K`) or whole old row (`O`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteBody {
    pub relation_id: u32,
    pub old: OldTuple,
}

/// Truncate option bit: `TRUNCATE … CASCADE`.
pub const TRUNCATE_CASCADE: u8 = 1;
/// Truncate option bit: `TRUNCATE … RESTART IDENTITY`.
pub const TRUNCATE_RESTART_IDENTITY: u8 = 2;

/// `T`: one TRUNCATE statement over one or more published relations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncateBody {
    /// Option bits, see [`TRUNCATE_CASCADE`] and [`TRUNCATE_RESTART_IDENTITY`].
    pub options: u8,
    pub relation_ids: Vec<u32>,
}

impl TruncateBody {
    pub fn cascade(&self) -> bool {
        self.options & TRUNCATE_CASCADE != 0
    }

    pub fn restart_identity(&self) -> bool {
        self.options & TRUNCATE_RESTART_IDENTITY != 0
    }
}

pub(crate) fn read_insert(reader: &mut Reader<'_>) -> Result<InsertBody> {
    Ok(InsertBody {
        relation_id: reader.u32()?,
        new: read_new_tuple(reader)?,
    })
}

pub(crate) fn read_update(reader: &mut Reader<'_>) -> Result<UpdateBody> {
    let relation_id = reader.u32()?;
    let marker_at = reader.position();
    let (old, new) = match reader.u8()? {
        NEW_TUPLE_TAG => (None, read_tuple(reader)?),
        marker @ (KEY_TUPLE_TAG | OLD_TUPLE_TAG) => {
            let old = read_old_tuple(reader, marker, marker_at)?;
            (Some(old), read_new_tuple(reader)?)
        }
        other => {
            let kind = DecodeErrorKind::UnexpectedTupleMarker(other);
            return Err(reader.error_at(marker_at, kind));
        }
    };
    Ok(UpdateBody {
        relation_id,
        old,
        new,
    })
}

pub(crate) fn read_delete(reader: &mut Reader<'_>) -> Result<DeleteBody> {
    let relation_id = reader.u32()?;
    let marker_at = reader.position();
    let marker = reader.u8()?;
    Ok(DeleteBody {
        relation_id,
        old: read_old_tuple(reader, marker, marker_at)?,
    })
}

pub(crate) fn read_truncate(reader: &mut Reader<'_>) -> Result<TruncateBody> {
    let count = reader.count_u32()?;
    let options = reader.u8()?;
    let mut relation_ids = Vec::with_capacity(reader.capacity_for(count, 4));
    for _ in 0..count {
        relation_ids.push(reader.u32()?);
    }
    Ok(TruncateBody {
        options,
        relation_ids,
    })
}
