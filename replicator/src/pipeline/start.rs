//! Where a session starts (pure; no I/O): from what the source's slot and OLAP's checkpoint
//! say, stream from the checkpoint, copy the source first, or refuse with what to do.

use crate::lsn::Lsn;
use crate::slot::SlotInfo;

/// How a session begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// OLAP holds this slot's changes up to the checkpoint: stream from there.
    Resume(Lsn),
    /// Nothing of this slot in OLAP: copy the source under a new slot first. `drop_slot`:
    /// a slot is left by a first start that died before its copy committed.
    FirstStart { drop_slot: bool },
}

/// Why a session cannot begin; each says what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "a copy of the source for slot {slot:?} (resync) started at {copy} and never \
         committed: OLAP holds the copy before it, up to {checkpoint}, and the slot made for \
         the new copy cannot continue from there; run `brewlytics resync` again"
    )]
    UnfinishedResync {
        slot: String,
        copy: Lsn,
        checkpoint: Lsn,
    },
    #[error(
        "replication slot {slot:?} was invalidated (wal_status = lost): changes after \
         {checkpoint} are gone from the source's WAL; run `brewlytics resync` to copy the \
         source again"
    )]
    SlotLost { slot: String, checkpoint: Lsn },
    #[error(
        "replication slot {slot:?} does not exist but OLAP holds changes up to {checkpoint}: \
         changes since then cannot be streamed; run `brewlytics resync` to copy the source \
         again"
    )]
    SlotMissing { slot: String, checkpoint: Lsn },
    /// Another process streams from the slot (it may be going away: retried).
    #[error("replication slot {slot:?} is active in another process")]
    SlotActive { slot: String },
}

/// The start for `slot`, given the slot as the source has it, the checkpoint OLAP holds, and
/// a copy (`resync`) that began at `unfinished_copy` and never committed.
pub fn decide(
    slot: &str,
    existing: Option<&SlotInfo>,
    checkpoint: Option<Lsn>,
    unfinished_copy: Option<Lsn>,
) -> Result<Start, Refusal> {
    let slot = slot.to_owned();
    match (existing, checkpoint) {
        (Some(_), Some(checkpoint)) if unfinished_copy.is_some() => {
            Err(Refusal::UnfinishedResync {
                slot,
                copy: unfinished_copy.unwrap_or_default(),
                checkpoint,
            })
        }
        (Some(s), Some(checkpoint)) if s.wal_status.as_deref() == Some("lost") => {
            Err(Refusal::SlotLost { slot, checkpoint })
        }
        (Some(_), Some(checkpoint)) => Ok(Start::Resume(checkpoint)),
        (None, Some(checkpoint)) => Err(Refusal::SlotMissing { slot, checkpoint }),
        (Some(s), None) if s.active => Err(Refusal::SlotActive { slot }),
        (existing, None) => Ok(Start::FirstStart {
            drop_slot: existing.is_some(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(active: bool, wal_status: Option<&str>) -> SlotInfo {
        SlotInfo {
            wal_status: wal_status.map(str::to_owned),
            active,
            ..SlotInfo::default()
        }
    }

    const CP: Lsn = Lsn(0x1_0000);

    #[test]
    fn a_slot_with_a_checkpoint_streams_from_it() {
        let s = slot(false, Some("reserved"));
        assert_eq!(decide("s", Some(&s), Some(CP), None), Ok(Start::Resume(CP)));
        // Held by a process going away: the source refuses START_REPLICATION, retried.
        let s = slot(true, Some("extended"));
        assert_eq!(decide("s", Some(&s), Some(CP), None), Ok(Start::Resume(CP)));
    }

    #[test]
    fn nothing_in_olap_copies_first() {
        assert_eq!(
            decide("s", None, None, None),
            Ok(Start::FirstStart { drop_slot: false })
        );
        // A first start that died before its copy committed: its slot is made again.
        let left = slot(false, Some("reserved"));
        assert_eq!(
            decide("s", Some(&left), None, None),
            Ok(Start::FirstStart { drop_slot: true })
        );
        // ...unless a process streams from it.
        let busy = slot(true, Some("reserved"));
        assert_eq!(
            decide("s", Some(&busy), None, None),
            Err(Refusal::SlotActive { slot: "s".into() })
        );
    }

    #[test]
    fn changes_that_cannot_be_streamed_stop_with_resync() {
        let lost = slot(false, Some("lost"));
        let e = decide("s", Some(&lost), Some(CP), None).unwrap_err();
        assert_eq!(
            e,
            Refusal::SlotLost {
                slot: "s".into(),
                checkpoint: CP
            }
        );
        assert!(e.to_string().contains("run `brewlytics resync`"), "{e}");
        let e = decide("s", None, Some(CP), None).unwrap_err();
        assert!(matches!(e, Refusal::SlotMissing { .. }), "{e}");
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn a_resync_that_never_committed_is_run_again() {
        let s = slot(false, Some("reserved"));
        let copy = Lsn(0x2_0000);
        let e = decide("s", Some(&s), Some(CP), Some(copy)).unwrap_err();
        assert_eq!(
            e,
            Refusal::UnfinishedResync {
                slot: "s".into(),
                copy,
                checkpoint: CP
            }
        );
        assert!(
            e.to_string().contains("run `brewlytics resync` again"),
            "{e}"
        );
        // Without a checkpoint the copy is simply made again (its journal rows cleaned up).
        assert_eq!(
            decide("s", Some(&s), None, Some(copy)),
            Ok(Start::FirstStart { drop_slot: true })
        );
    }
}
