//! The safe Rust layer: `module::<T>()` fills the record, errors become messages and panics
//! are caught at the boundary.

use std::ffi::CStr;
use std::ops::Range;

use frugal_plugin_abi::*;

#[derive(Debug)]
struct Panicky {
    weights: u64,
}

impl PluginBackend for Panicky {
    const NAME: &'static CStr = c"panicky";
    const FAMILIES: u32 = (1 << FRUGAL_FAMILY_CONV) | (1 << FRUGAL_FAMILY_COPY);

    fn create(options: &FrugalOptions) -> Result<Self, PluginError> {
        if options.threads == 99 {
            return Err("99 threads is too many".into());
        }
        Ok(Panicky { weights: 0 })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { storage_mask: 1, device: "nowhere".into(), ..Default::default() }
    }

    fn alloc_arena(&mut self, _bytes: usize) -> Result<(), PluginError> {
        Ok(())
    }

    fn upload(&mut self, _shape: &[u64], data: &[f32]) -> Result<u64, PluginError> {
        self.weights += data.len() as u64 * 4;
        Ok(7)
    }

    fn execute(&mut self, call: Call<'_>, _scratch: FrugalScratch) -> Result<(), PluginError> {
        match call {
            Call::Conv(_) => panic!("conv exploded"),
            other => Err(format!("{} failed on purpose", other.family())),
        }
    }

    fn write(&mut self, _: &FrugalWindow, _: &[f32], _: Range<usize>) -> Result<(), PluginError> {
        Ok(())
    }

    fn read(
        &mut self,
        _: &FrugalWindow,
        _: &mut [f32],
        _: Range<usize>,
    ) -> Result<(), PluginError> {
        Ok(())
    }

    fn weight_bytes(&self) -> u64 {
        self.weights
    }
}

frugal_plugin_abi::export_plugin!(Panicky);

fn zeroed<T: Copy>() -> T {
    // SAFETY: only used for the plain-data ABI records (integers, floats, nullable pointers).
    unsafe { std::mem::zeroed() }
}

#[test]
fn the_record_starts_with_version_and_size_and_leaves_unsupported_families_null() {
    // SAFETY: the entry takes nothing and returns a static record.
    let m = unsafe { &*frugal_plugin_entry() };
    assert_eq!(m.abi_version, FRUGAL_PLUGIN_ABI_VERSION);
    assert_eq!(m.struct_size as usize, std::mem::size_of::<FrugalPluginModule>());
    // SAFETY: the name is a static C string.
    assert_eq!(unsafe { m.name_text() }, "panicky");
    assert!(m.has_family(FRUGAL_FAMILY_CONV) && m.has_family(FRUGAL_FAMILY_COPY));
    assert!(!m.has_family(FRUGAL_FAMILY_RESIZE) && m.resize.is_none());
}

#[test]
fn errors_become_messages_and_panics_are_caught() {
    let m = module::<Panicky>();
    let mut err = FrugalError::default();
    let mut b: FrugalBackend = std::ptr::null_mut();
    let bad = FrugalOptions { struct_size: 8, threads: 99 };
    // SAFETY: valid pointers throughout.
    unsafe {
        assert_eq!(m.create.unwrap()(&bad, &mut b, &mut err), FRUGAL_ERROR);
        assert_eq!(err.text(), "99 threads is too many");
        let ok = FrugalOptions { struct_size: 8, threads: 1 };
        assert_eq!(m.create.unwrap()(&ok, &mut b, &mut err), FRUGAL_OK);
        assert!(!b.is_null());

        let data = [1.0f32; 3];
        let t = FrugalTensor {
            dtype: FRUGAL_DTYPE_F32,
            rank: 1,
            dims: [3, 1, 1, 1, 1, 1],
            data: data.as_ptr().cast(),
            len: 3,
        };
        let mut id = 0;
        assert_eq!(m.upload.unwrap()(b, &t, &mut id, &mut err), FRUGAL_OK);
        assert_eq!((id, m.weight_bytes.unwrap()(b)), (7, 12));

        let conv: FrugalConv = zeroed();
        let st = m.conv.unwrap()(b, &conv, FrugalScratch::default(), &mut err);
        assert_eq!(st, FRUGAL_PANIC);
        assert!(err.text().contains("panicked: conv exploded"), "{}", err.text());

        let copy: FrugalCopy = zeroed();
        let st = m.copy.unwrap()(b, &copy, FrugalScratch::default(), &mut err);
        assert_eq!((st, err.text()), (FRUGAL_ERROR, "copy failed on purpose".to_string()));

        // Null records are errors, not crashes.
        let st = m.copy.unwrap()(b, std::ptr::null(), FrugalScratch::default(), &mut err);
        assert_eq!(st, FRUGAL_ERROR);
        let st = m.check.unwrap()(std::ptr::null_mut(), &mut err);
        assert_eq!((st, err.text()), (FRUGAL_ERROR, "null backend handle".to_string()));

        let mut caps = FrugalCapabilities::default();
        assert_eq!(m.capabilities.unwrap()(b, &mut caps, &mut err), FRUGAL_OK);
        assert_eq!(c_text(&caps.device), "nowhere");
        m.release.unwrap()(b);
    }
}

#[test]
fn long_messages_are_truncated_on_a_character_boundary() {
    let mut e = FrugalError::default();
    e.set(&"é".repeat(FRUGAL_ERROR_CAPACITY));
    let t = e.text();
    assert!(t.len() < FRUGAL_ERROR_CAPACITY && t.chars().all(|c| c == 'é'));
}
