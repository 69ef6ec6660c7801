//! `-m [size=]N[,slots=n][,maxmem=size]`.
//!
//! Several `-m` options merge key by key, later values winning, as QEMU's "memory" option
//! group does; the checks that involve several keys run once all are known.

use super::config::MemoryConfig;
use super::error::ArgError;
use super::opts::{parse_u32, Opts, Syntax};
use super::size::{parse_size, SizeError};

/// QEMU's default RAM size for PC machines.
const DEFAULT_SIZE: u64 = 128 << 20;
/// QEMU rounds the RAM size up to this (and so to the 4 KiB page KVM needs).
const SIZE_ALIGN: u64 = 8 << 10;
/// A suffix-less `size` is in MiB, QEMU's legacy `-m 512` form.
const MIB: u64 = 1 << 20;

/// The `-m` keys seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MemoryArgs {
    size: Option<u64>,
    maxmem: Option<u64>,
    slots: Option<u32>,
}

impl MemoryArgs {
    /// Parses one `-m` argument and merges it in.
    pub fn merge(&mut self, arg: &str) -> Result<(), ArgError> {
        let opts = Opts::parse(arg, Some("size"), Syntax::QemuOpts)?;
        opts.check_known(&["size", "slots", "maxmem"])?;
        if let Some(size) = opts.get("size") {
            self.size = Some(ram_size(size)?);
        }
        if let Some(maxmem) = opts.get("maxmem") {
            // Unlike `size`, QEMU reads a suffix-less `maxmem` as bytes.
            self.maxmem = Some(parse_size(maxmem, 1).map_err(|_| ArgError::InvalidSize("maxmem"))?);
        }
        if let Some(slots) = opts.get("slots") {
            self.slots = Some(parse_u32("slots", slots)?);
        }
        Ok(())
    }

    /// The final configuration, with QEMU's consistency checks.
    pub fn resolve(&self) -> Result<MemoryConfig, ArgError> {
        let size = self.size.unwrap_or(DEFAULT_SIZE);
        if let Some(maxmem) = self.maxmem {
            if maxmem < size {
                return Err(ArgError::MaxmemBelowSize { maxmem, size });
            }
            if self.slots.is_some_and(|s| s > 0) && maxmem == size {
                return Err(ArgError::NoHotplugRoom(size));
            }
        } else if self.slots.is_some() {
            return Err(ArgError::SlotsWithoutMaxmem);
        }
        Ok(MemoryConfig {
            size,
            maxmem: self.maxmem,
            slots: self.slots,
        })
    }
}

/// The `size` value in bytes, rounded up to [`SIZE_ALIGN`].
///
/// QEMU takes `-m 0` as "the default size"; petrel rejects it, since asking for no RAM is
/// almost certainly a mistake in the caller's arithmetic.
fn ram_size(value: &str) -> Result<u64, ArgError> {
    let bytes = parse_size(value, MIB).map_err(|e| match e {
        SizeError::Invalid => ArgError::InvalidSize("size"),
        SizeError::TooLarge => ArgError::RamTooLarge,
    })?;
    if bytes == 0 {
        return Err(ArgError::ZeroRamSize);
    }
    bytes
        .checked_next_multiple_of(SIZE_ALIGN)
        .ok_or(ArgError::RamTooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str]) -> Result<MemoryConfig, ArgError> {
        let mut m = MemoryArgs::default();
        for a in args {
            m.merge(a)?;
        }
        m.resolve()
    }

    fn size(args: &[&str]) -> u64 {
        resolve(args).unwrap().size
    }

    #[test]
    fn default_is_128m() {
        assert_eq!(
            resolve(&[]),
            Ok(MemoryConfig {
                size: 128 << 20,
                maxmem: None,
                slots: None
            })
        );
        // QEMU ignores an empty -m argument the same way.
        assert_eq!(size(&[""]), 128 << 20);
    }

    #[test]
    fn plain_number_is_mib() {
        assert_eq!(size(&["512"]), 512 << 20);
        assert_eq!(size(&["size=512"]), 512 << 20);
        assert_eq!(size(&["1.5"]), 3 << 19);
    }

    #[test]
    fn suffixes() {
        assert_eq!(size(&["512M"]), 512 << 20);
        assert_eq!(size(&["2g"]), 2 << 30);
        assert_eq!(size(&["1T"]), 1 << 40);
        assert_eq!(size(&["262144k"]), 256 << 20);
        assert_eq!(size(&["8192b"]), 8192);
    }

    #[test]
    fn rounded_up_to_8k() {
        assert_eq!(size(&["1b"]), 8192);
        assert_eq!(size(&["8193B"]), 16384);
        assert_eq!(size(&["12K"]), 16384);
    }

    #[test]
    fn later_values_win() {
        assert_eq!(size(&["1G", "2G"]), 2 << 30);
        assert_eq!(size(&["1G,size=3G"]), 3 << 30);
        assert_eq!(
            resolve(&["1G", "maxmem=4G,slots=2"]),
            Ok(MemoryConfig {
                size: 1 << 30,
                maxmem: Some(4 << 30),
                slots: Some(2)
            })
        );
    }

    #[test]
    fn invalid_sizes() {
        for a in ["12Q", "-1", "abc", "1MB", "size=", "0x100"] {
            assert_eq!(resolve(&[a]), Err(ArgError::InvalidSize("size")), "{a}");
        }
        assert_eq!(resolve(&["0"]), Err(ArgError::ZeroRamSize));
        assert_eq!(resolve(&["0G"]), Err(ArgError::ZeroRamSize));
        assert_eq!(resolve(&["16E"]), Err(ArgError::RamTooLarge));
        assert_eq!(resolve(&["17592186044416"]), Err(ArgError::RamTooLarge));
        // Fits in 64 bits but not once rounded up to 8 KiB.
        assert_eq!(
            resolve(&["18446744073709551615b"]),
            Err(ArgError::RamTooLarge)
        );
    }

    #[test]
    fn maxmem_is_in_bytes_without_suffix() {
        assert_eq!(
            resolve(&["4096b,maxmem=8192"]),
            Ok(MemoryConfig {
                size: 8192,
                maxmem: Some(8192),
                slots: None
            })
        );
        assert_eq!(
            resolve(&["1G,maxmem=4096"]),
            Err(ArgError::MaxmemBelowSize {
                maxmem: 4096,
                size: 1 << 30
            })
        );
        assert_eq!(
            resolve(&["1G,maxmem=x"]),
            Err(ArgError::InvalidSize("maxmem"))
        );
    }

    #[test]
    fn slots_rules() {
        assert_eq!(resolve(&["1G,slots=2"]), Err(ArgError::SlotsWithoutMaxmem));
        assert_eq!(
            resolve(&["1G,slots=2,maxmem=1G"]),
            Err(ArgError::NoHotplugRoom(1 << 30))
        );
        // No slots: maxmem may equal size.
        assert!(resolve(&["1G,slots=0,maxmem=1G"]).is_ok());
        assert!(resolve(&["1G,maxmem=1G"]).is_ok());
        assert_eq!(
            resolve(&["1G,slots=two,maxmem=2G"]),
            Err(ArgError::ExpectsNumber("slots".into()))
        );
    }

    #[test]
    fn unknown_keys() {
        assert_eq!(
            resolve(&["1G,share=on"]),
            Err(ArgError::UnknownParameter("share".into()))
        );
        assert_eq!(
            resolve(&["1G,prealloc"]),
            Err(ArgError::UnknownParameter("prealloc".into()))
        );
    }
}
