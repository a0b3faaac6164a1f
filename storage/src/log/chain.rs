//! A batch's `chain` value: the order its hash chain takes the batch's event ids in.
//!
//! The chain runs over ids in append order, but the blocks hold every id already, in block
//! order: (handle, event_time, id) across the batch, buckets ascending, which is the order a
//! walk of the blocks meets a batch's records in. Store format 8 and earlier stored the ids
//! again in append order, 32 bytes an event (165 MB of the peer set's 847 MB store). Format 9
//! stores, for each event in append order, its position in block order, in the fewest bytes
//! that hold the batch's last position (3 for 500,000 events), after one byte giving that width.
//! `verify` collects the batch's ids from its blocks and puts them back in append order.
//!
//! The two forms are told apart by length alone: a batch of `n` events stores `32 · n` bytes of
//! ids or `1 + w · n` of positions (w from 1 to 8), and `n · (32 − w) = 1` has no solution.

use crate::envelope::EventId;

/// A batch's chain as stored.
pub(crate) enum Chain {
    /// The ids themselves, in append order (store format 8 and earlier).
    Ids(Vec<u8>),
    /// Each event's position in block order, in append order (store format 9).
    Positions { width: usize, bytes: Vec<u8> },
}

/// The value of a batch whose events in append order have these positions in block order.
pub(crate) fn encode(positions: &[usize]) -> Vec<u8> {
    let n = positions.len();
    let width = width_for(n);
    let mut out = Vec::with_capacity(1 + width * n);
    // At most 8: a usize has 8 bytes.
    out.push(width as u8);
    for p in positions {
        out.extend_from_slice(&(*p as u64).to_be_bytes()[8 - width..]);
    }
    out
}

/// Bytes per position for a batch of `n` events: enough for `n − 1`, at least one.
fn width_for(n: usize) -> usize {
    let bits = usize::BITS - n.saturating_sub(1).leading_zeros();
    (bits as usize).div_ceil(8).max(1)
}

impl Chain {
    /// Reads the stored value of a batch of `events` events.
    pub(crate) fn decode(mut value: Vec<u8>, events: u64) -> Result<Chain, String> {
        let n = usize::try_from(events).map_err(|_| "too many events for this machine".to_string())?;
        if Some(value.len()) == n.checked_mul(32) {
            return Ok(Chain::Ids(value));
        }
        let width = usize::from(*value.first().ok_or("the chain value is empty")?);
        if !(1..=8).contains(&width) || Some(value.len()) != width.checked_mul(n).map(|b| b + 1) {
            return Err(format!(
                "the chain value is {} bytes, neither {events} ids nor {events} positions",
                value.len()
            ));
        }
        value.remove(0);
        Ok(Chain::Positions { width, bytes: value })
    }

    /// Whether the ids come from the blocks (then [`Chain::ids`] needs them in block order).
    pub(crate) fn needs_blocks(&self) -> bool {
        matches!(self, Chain::Positions { .. })
    }

    /// The batch's ids in append order. `in_block_order` is what the blocks hold of the batch,
    /// in block order (used only by a chain of positions), and must be exactly its events: each
    /// position names one of them and no two the same.
    pub(crate) fn ids(&self, in_block_order: &[EventId]) -> Result<Vec<EventId>, String> {
        match self {
            Chain::Ids(bytes) => Ok(bytes
                .chunks_exact(32)
                .map(|chunk| {
                    let mut id = [0; 32];
                    id.copy_from_slice(chunk);
                    id
                })
                .collect()),
            Chain::Positions { width, bytes } => {
                let n = bytes.len() / width;
                if in_block_order.len() != n {
                    return Err(format!("its blocks hold {} of its {n} events", in_block_order.len()));
                }
                let mut taken = vec![false; n];
                bytes
                    .chunks_exact(*width)
                    .map(|p| {
                        let mut be = [0u8; 8];
                        be[8 - width..].copy_from_slice(p);
                        let p = usize::try_from(u64::from_be_bytes(be)).unwrap_or(usize::MAX);
                        match taken.get_mut(p) {
                            Some(t) if !*t => {
                                *t = true;
                                Ok(in_block_order[p])
                            }
                            _ => Err(format!("its chain names position {p} twice or out of range")),
                        }
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u8) -> EventId {
        [i; 32]
    }

    #[test]
    fn positions_put_the_block_order_back_in_append_order() {
        // Appended c, a, b; block order a, b, c.
        let value = encode(&[2, 0, 1]);
        assert_eq!(value, vec![1, 2, 0, 1]);
        let chain = Chain::decode(value, 3).expect("decodes");
        assert!(chain.needs_blocks());
        assert_eq!(
            chain.ids(&[id(1), id(2), id(3)]).expect("ids"),
            vec![id(3), id(1), id(2)]
        );
    }

    #[test]
    fn the_width_is_the_fewest_bytes_of_the_last_position() {
        assert_eq!(
            [1, 256, 257, 65_536, 65_537, 500_000].map(width_for),
            [1, 1, 2, 2, 3, 3]
        );
        let value = encode(&(0..257).rev().collect::<Vec<_>>());
        assert_eq!(value.len(), 1 + 2 * 257);
        let blocks: Vec<EventId> = (0..257).map(|i| id((i % 251) as u8)).collect();
        let ids = Chain::decode(value, 257).expect("decodes").ids(&blocks).expect("ids");
        assert_eq!(ids.first(), blocks.last());
    }

    #[test]
    fn stored_ids_are_read_as_they_are() {
        let value: Vec<u8> = [id(5), id(6)].concat();
        let chain = Chain::decode(value, 2).expect("decodes");
        assert!(!chain.needs_blocks());
        assert_eq!(chain.ids(&[]).expect("ids"), vec![id(5), id(6)]);
    }

    #[test]
    fn a_chain_that_is_no_permutation_of_its_blocks_is_refused() {
        let twice = Chain::decode(encode(&[0, 0]), 2).expect("decodes");
        assert!(twice.ids(&[id(1), id(2)]).is_err());
        let beyond = Chain::decode(vec![1, 0, 7], 2).expect("decodes");
        assert!(beyond.ids(&[id(1), id(2)]).is_err());
        let short = Chain::decode(encode(&[1, 0]), 2).expect("decodes");
        assert!(short.ids(&[id(1)]).is_err(), "a block lost an event");
        assert!(Chain::decode(vec![9, 0, 0], 2).is_err(), "no width of 9 bytes");
        assert!(Chain::decode(vec![1, 0], 2).is_err(), "cut short");
    }
}
