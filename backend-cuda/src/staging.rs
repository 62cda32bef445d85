//! Host <-> device staging for [`Backend::write`](frugal_core::Backend::write) and
//! [`Backend::read`](frugal_core::Backend::read).
//!
//! Only a window's rows travel (a by-parts run feeds its input a few rows at a time: copying
//! the whole host tensor on every feed made it quadratic), and they travel through up to four
//! pinned host slots, each with an event: a write fills a slot the GPU has finished with and
//! queues its copy, without waiting for the kernels queued before it (a layer-by-layer run
//! reuses one slot, so pinned memory stays one input's size there). A copy from pageable
//! memory would synchronise the stream on every feed and leave the GPU idle between firings.
//!
//! On a discrete GPU the slot is copied to a device staging buffer (the copy engine; the buffer
//! is reused in stream order, so one suffices). With `host_mapped_io` (Jetson) the scatter and
//! gather kernels use the slot's device-mapped address directly.

use frugal_core::Result;

use crate::device::{Dev, DevBuf, Done, Mapped};

/// Pinned host slots at most: a writer can run this many feeds ahead of the GPU.
const SLOTS: usize = 4;

struct Slot {
    mem: Mapped,
    /// Recorded after the last work that reads `mem`.
    done: Done,
}

impl Slot {
    fn new(dev: &Dev, n: usize) -> Result<Slot> {
        Ok(Slot { mem: dev.mapped(n)?, done: Done::default() })
    }
}

#[derive(Default)]
pub(crate) struct Staging {
    slots: [Option<Slot>; SLOTS],
    next: usize,
    /// Device staging (discrete GPUs): `None` until needed, never with `host_mapped_io`.
    device: Option<DevBuf>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host: usize = self.slots.iter().flatten().map(|s| s.mem.len).sum();
        let device = self.device.as_ref().map_or(0, |d| d.len());
        write!(f, "Staging({host} host floats, {device} device floats)")
    }
}

/// A slot taken for one transfer: its index and the device address kernels use.
pub(crate) struct Taken {
    slot: usize,
    pub(crate) addr: u64,
    mapped: bool,
}

impl Staging {
    /// Takes a slot with room for `n` floats that the GPU is done with, and the address the
    /// scatter/gather kernel uses: the device staging buffer, or (`mapped`) the slot's own
    /// mapping. `idle`: the stream was just synchronised (a read), so every slot is free.
    ///
    /// In turn from the last one taken: a free slot that fits; else an unallocated one (a
    /// layer-by-layer run, one feed and one drain, keeps reusing a single slot; by parts grows
    /// up to [`SLOTS`] slots of a few rows); else the first slot that fits, once its work has
    /// run; else, after a sync, the next slot grown to `n`.
    pub(crate) fn take(&mut self, dev: &Dev, n: usize, mapped: bool, idle: bool) -> Result<Taken> {
        let n = n.max(1);
        let order: [usize; SLOTS] = std::array::from_fn(|k| (self.next + k) % SLOTS);
        let fits = |s: &Option<Slot>| s.as_ref().is_some_and(|s| s.mem.len >= n);
        let mut free = None;
        for i in order {
            if let Some(s) = self.slots[i].as_ref().filter(|s| s.mem.len >= n) {
                if idle || s.done.is_done()? {
                    free = Some(i);
                    break;
                }
            }
        }
        let i = if let Some(i) = free {
            i
        } else if let Some(i) = order.into_iter().find(|&i| self.slots[i].is_none()) {
            self.slots[i] = Some(Slot::new(dev, n)?);
            i
        } else if let Some(i) = order.into_iter().find(|&i| fits(&self.slots[i])) {
            self.slots[i].as_ref().expect("fits").done.wait()?;
            i
        } else {
            // Queued work may still read the slot being replaced: let it finish first.
            let i = order[0];
            dev.sync()?;
            self.slots[i] = None;
            self.slots[i] = Some(Slot::new(dev, n)?);
            i
        };
        self.next = (i + 1) % SLOTS;
        let addr = if mapped {
            self.slots[i].as_ref().expect("set above").mem.dev
        } else {
            if self.device.as_ref().is_none_or(|d| d.len() < n) {
                dev.sync()?;
                self.device = None;
                self.device = Some(dev.alloc(n)?);
            }
            self.device.as_ref().expect("set above").ptr
        };
        Ok(Taken { slot: i, addr, mapped })
    }

    /// The host side of a taken slot, `n` floats.
    pub(crate) fn host(&mut self, t: &Taken, n: usize) -> &mut [f32] {
        self.slots[t.slot].as_mut().expect("taken slots exist").mem.slice_mut(n)
    }

    /// After the host filled the slot: queues its copy to the device staging buffer (unless
    /// the kernel reads the mapping itself).
    pub(crate) fn upload(&self, dev: &Dev, t: &Taken, n: usize) -> Result<()> {
        if t.mapped {
            return Ok(());
        }
        let slot = self.slots[t.slot].as_ref().expect("taken slots exist");
        dev.htod_pinned(t.addr, &slot.mem, n)
    }

    /// After the kernel that reads the slot (or its copy) was queued: the slot is free again
    /// once that work has run.
    pub(crate) fn release(&mut self, dev: &Dev, t: &Taken) -> Result<()> {
        dev.record(&mut self.slots[t.slot].as_mut().expect("taken slots exist").done)
    }

    /// After the gather kernel was queued: brings its `n` floats into the slot and waits for
    /// them.
    pub(crate) fn download(&mut self, dev: &Dev, t: &Taken, n: usize) -> Result<&[f32]> {
        let slot = self.slots[t.slot].as_mut().expect("taken slots exist");
        if !t.mapped {
            dev.dtoh_pinned(&mut slot.mem, t.addr, n)?;
        }
        dev.sync()?;
        Ok(slot.mem.slice_mut(n))
    }
}

#[cfg(all(test, feature = "emulator"))]
mod tests {
    use super::*;

    fn slots(s: &Staging) -> Vec<usize> {
        s.slots.iter().flatten().map(|s| s.mem.len).collect()
    }

    #[test]
    fn a_feed_and_a_drain_per_run_keep_one_slot_and_bigger_transfers_grow_at_most_four() {
        let dev = Dev::Emu(crate::emulator::Emu::new().unwrap());
        let mut s = Staging::default();
        for _ in 0..5 {
            let t = s.take(&dev, 1000, false, false).unwrap();
            s.release(&dev, &t).unwrap();
            s.take(&dev, 400, false, true).unwrap();
        }
        assert_eq!(slots(&s), [1000], "layer by layer reuses one slot");
        let t = s.take(&dev, 5000, true, false).unwrap();
        assert!(t.mapped && t.addr == s.slots[t.slot].as_ref().unwrap().mem.dev);
        assert_eq!(slots(&s), [1000, 5000], "a bigger transfer takes a free, larger slot");
        assert!(s.device.as_ref().is_some_and(|d| d.len() == 1000), "mapped: no device staging");
        for n in [6000, 7000, 8000] {
            s.take(&dev, n, false, false).unwrap();
        }
        let mut lens = slots(&s);
        lens.sort();
        assert_eq!(lens.len(), SLOTS, "never more than {SLOTS} slots");
        assert_eq!(lens.last(), Some(&8000), "the largest transfer replaced a slot");
        assert!(s.device.as_ref().is_some_and(|d| d.len() == 8000));
    }
}
