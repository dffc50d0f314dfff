//! Media port allocation: RTP/RTCP pairs (even RTP port, RTCP = RTP + 1) from the configured
//! range, handed out in FIFO order so a freed pair is reused as late as possible (a late
//! packet of a finished call then finds no endpoint instead of a stranger's call).

use std::collections::VecDeque;

/// Why no pair could be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Every pair in the range is in use (or could not be bound).
    #[error("no free media ports left in the configured range")]
    Exhausted,
}

/// Hands out media port pairs. The UDP backend's implementation also binds the sockets; the
/// session table only sees port numbers.
pub trait PortPool {
    /// Reserves a pair and returns its (even) RTP port.
    fn allocate(&mut self) -> Result<u16, PortError>;
    /// Returns a pair given out by `allocate`.
    fn release(&mut self, rtp_port: u16);
    /// Pairs currently free.
    fn free_pairs(&self) -> usize;
}

/// The number-only allocator: FIFO queue of free pairs.
#[derive(Debug)]
pub struct PortRange {
    free: VecDeque<u16>,
    in_use: Vec<bool>,
    first: u16,
}

impl PortRange {
    /// All even ports `p` with `p` and `p + 1` inside `min..=max`.
    pub fn new(min: u16, max: u16) -> Self {
        let first = min + (min % 2);
        let free: VecDeque<u16> = (u32::from(first)..u32::from(max))
            .step_by(2)
            .map(|p| p as u16)
            .collect();
        let in_use = vec![false; free.len()];
        PortRange {
            free,
            in_use,
            first,
        }
    }

    fn index(&self, rtp_port: u16) -> Option<usize> {
        let off = rtp_port.checked_sub(self.first)?;
        let i = usize::from(off / 2);
        (off % 2 == 0 && i < self.in_use.len()).then_some(i)
    }

    /// Puts a pair that could not be used (e.g. bind failed) at the back of the queue.
    pub fn skip(&mut self, rtp_port: u16) {
        self.release(rtp_port);
    }
}

impl PortPool for PortRange {
    fn allocate(&mut self) -> Result<u16, PortError> {
        let port = self.free.pop_front().ok_or(PortError::Exhausted)?;
        if let Some(i) = self.index(port) {
            self.in_use[i] = true;
        }
        Ok(port)
    }

    fn release(&mut self, rtp_port: u16) {
        if let Some(i) = self.index(rtp_port) {
            if self.in_use[i] {
                self.in_use[i] = false;
                self.free.push_back(rtp_port);
            }
        }
    }

    fn free_pairs(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_and_inside_the_range() {
        let mut r = PortRange::new(30_001, 30_010);
        let got: Vec<u16> = std::iter::from_fn(|| r.allocate().ok()).collect();
        assert_eq!(got, vec![30_002, 30_004, 30_006, 30_008]);
        assert_eq!(r.allocate(), Err(PortError::Exhausted));
    }

    #[test]
    fn freed_pairs_go_to_the_back_and_double_release_is_harmless() {
        let mut r = PortRange::new(30_000, 30_005);
        let a = r.allocate().unwrap();
        r.release(a);
        r.release(a);
        r.release(12); // never ours
        assert_eq!(r.free_pairs(), 3);
        assert_eq!(r.allocate().unwrap(), 30_002);
        assert_eq!(r.allocate().unwrap(), 30_004);
        assert_eq!(r.allocate().unwrap(), 30_000);
    }

    #[test]
    fn full_default_range() {
        let r = PortRange::new(30_000, 39_999);
        assert_eq!(r.free_pairs(), 5000);
        let r = PortRange::new(65_534, 65_535);
        assert_eq!(r.free_pairs(), 1);
    }
}
