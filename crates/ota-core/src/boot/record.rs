//! The on-flash encoding of one boot-state record (see the layout table in [`super`]).

use super::{BootState, FailureReason, OwedReport, ReportOutcome, Slot, SlotVersion, TrialState};

/// Magic bytes at the start of every record.
pub(super) const MAGIC: [u8; 4] = *b"OTAB";
/// Record format version.
pub(super) const FORMAT: u8 = 1;
/// Encoded length of a record without padding (CRC included).
pub(super) const RECORD_LEN: usize = 116;
/// Bytes covered by the CRC.
const BODY_LEN: usize = RECORD_LEN - 4;

/// Sequential little-endian writer; every `put_*` is bounds-checked and returns `None` if the
/// buffer is too short (never the case for a `RECORD_LEN` buffer).
struct Writer<'a> {
    rest: &'a mut [u8],
}

impl Writer<'_> {
    fn put<const N: usize>(&mut self, bytes: [u8; N]) -> Option<()> {
        let rest = core::mem::take(&mut self.rest);
        let (head, tail) = rest.split_first_chunk_mut::<N>()?;
        *head = bytes;
        self.rest = tail;
        Some(())
    }

    fn version(&mut self, v: SlotVersion) -> Option<()> {
        self.put(v.major.to_le_bytes())?;
        self.put(v.minor.to_le_bytes())?;
        self.put(v.patch.to_le_bytes())
    }
}

/// Sequential little-endian reader.
struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.rest.split_first_chunk::<N>()?;
        self.rest = tail;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    fn version(&mut self) -> Option<SlotVersion> {
        Some(SlotVersion {
            major: self.u64()?,
            minor: self.u64()?,
            patch: self.u64()?,
        })
    }
}

/// Encodes `state` with sequence number `seq` into `out[..RECORD_LEN]`.
/// Returns `None` only if `out` is shorter than [`RECORD_LEN`].
pub(super) fn encode(state: &BootState, seq: u32, out: &mut [u8]) -> Option<()> {
    let record = out.get_mut(..RECORD_LEN)?;
    let (trial_kind, trial_boots, trial_version) = match state.trial {
        TrialState::None => (0u8, 0u8, SlotVersion::ZERO),
        TrialState::Pending { version } => (1, 0, version),
        TrialState::Booted { version, boots } => (2, boots, version),
    };
    let (owed_kind, reason, reason_boots, owed_version) = match state.owed {
        None => (0u8, 0u8, 0u8, SlotVersion::ZERO),
        Some(OwedReport {
            outcome: ReportOutcome::Updated,
            version,
        }) => (1, 0, 0, version),
        Some(OwedReport {
            outcome: ReportOutcome::Failed(FailureReason::TrialNotConfirmed { boots }),
            version,
        }) => (2, 1, boots, version),
        Some(OwedReport {
            outcome: ReportOutcome::Failed(FailureReason::Rejected),
            version,
        }) => (2, 2, 0, version),
    };
    let mut w = Writer { rest: record };
    w.put(MAGIC)?;
    w.put([FORMAT, state.active.index(), trial_kind, trial_boots])?;
    w.put(seq.to_le_bytes())?;
    w.version(state.active_version)?;
    w.version(state.highest_accepted)?;
    w.version(trial_version)?;
    w.put([owed_kind, reason, reason_boots, 0])?;
    w.version(owed_version)?;
    let crc = crc32fast::hash(out.get(..BODY_LEN)?);
    let mut w = Writer {
        rest: out.get_mut(BODY_LEN..RECORD_LEN)?,
    };
    w.put(crc.to_le_bytes())
}

/// Decodes a record; `None` unless magic, format, CRC and every field are valid and canonical
/// (unused fields zero), so `decode(encode(s))` is the only way to get a given state.
pub(super) fn decode(bytes: &[u8]) -> Option<(u32, BootState)> {
    let body = bytes.get(..BODY_LEN)?;
    let crc = bytes
        .get(BODY_LEN..RECORD_LEN)?
        .first_chunk::<4>()
        .map(|c| u32::from_le_bytes(*c))?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let mut r = Reader { rest: body };
    if r.take::<4>()? != MAGIC || r.u8()? != FORMAT {
        return None;
    }
    let active = Slot::from_index(r.u8()?)?;
    let trial_kind = r.u8()?;
    let trial_boots = r.u8()?;
    let seq = r.u32()?;
    let active_version = r.version()?;
    let highest_accepted = r.version()?;
    let trial_version = r.version()?;
    let [owed_kind, reason, reason_boots, reserved] = r.take::<4>()?;
    let owed_version = r.version()?;
    if reserved != 0 {
        return None;
    }
    let trial = match (trial_kind, trial_boots) {
        (0, 0) if trial_version == SlotVersion::ZERO => TrialState::None,
        (1, 0) => TrialState::Pending {
            version: trial_version,
        },
        (2, boots @ 1..) => TrialState::Booted {
            version: trial_version,
            boots,
        },
        _ => return None,
    };
    let owed = match (owed_kind, reason, reason_boots) {
        (0, 0, 0) if owed_version == SlotVersion::ZERO => None,
        (1, 0, 0) => Some(ReportOutcome::Updated),
        (2, 1, boots @ 1..) => Some(ReportOutcome::Failed(FailureReason::TrialNotConfirmed {
            boots,
        })),
        (2, 2, 0) => Some(ReportOutcome::Failed(FailureReason::Rejected)),
        _ => return None,
    }
    .map(|outcome| OwedReport {
        outcome,
        version: owed_version,
    });
    Some((
        seq,
        BootState {
            active,
            active_version,
            highest_accepted,
            trial,
            owed,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BootState {
        BootState {
            active: Slot::B,
            active_version: SlotVersion::new(1, 2, 3),
            highest_accepted: SlotVersion::new(1, 2, 3),
            trial: TrialState::Booted {
                version: SlotVersion::new(1, 3, 0),
                boots: 2,
            },
            owed: Some(OwedReport {
                outcome: ReportOutcome::Failed(FailureReason::TrialNotConfirmed { boots: 1 }),
                version: SlotVersion::new(1, 2, 9),
            }),
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = [0u8; RECORD_LEN];
        encode(&sample(), 0xDEAD_BEEF, &mut buf).unwrap();
        assert_eq!(decode(&buf), Some((0xDEAD_BEEF, sample())));
        assert_eq!(&buf[..4], b"OTAB");
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let mut buf = [0u8; RECORD_LEN];
        encode(&sample(), 7, &mut buf).unwrap();
        for i in 0..RECORD_LEN * 8 {
            let mut bad = buf;
            bad[i / 8] ^= 1 << (i % 8);
            assert_eq!(decode(&bad), None, "bit {i}");
        }
    }

    #[test]
    fn short_or_blank_input_is_rejected() {
        let mut buf = [0u8; RECORD_LEN];
        encode(&sample(), 7, &mut buf).unwrap();
        assert_eq!(decode(&buf[..RECORD_LEN - 1]), None);
        assert_eq!(decode(&[0xFF; RECORD_LEN]), None);
        assert_eq!(decode(&[0x00; RECORD_LEN]), None);
        assert_eq!(encode(&sample(), 7, &mut [0u8; RECORD_LEN - 1]), None);
    }

    /// Re-seals a hand-edited record with a correct CRC.
    fn reseal(buf: &mut [u8; RECORD_LEN]) {
        let crc = crc32fast::hash(&buf[..BODY_LEN]);
        buf[BODY_LEN..].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn non_canonical_fields_are_rejected_even_with_valid_crc() {
        let mut good = [0u8; RECORD_LEN];
        encode(&sample(), 1, &mut good).unwrap();
        // (offset, value): format, slot, trial kind, trial boots 0 for booted, owed kind,
        // reason, reason boots 0, reserved.
        for (offset, value) in [
            (4, 2u8),
            (5, 2),
            (6, 3),
            (7, 0),
            (84, 3),
            (85, 3),
            (86, 0),
            (87, 1),
        ] {
            let mut bad = good;
            bad[offset] = value;
            reseal(&mut bad);
            assert_eq!(decode(&bad), None, "offset {offset} value {value}");
        }
    }
}
