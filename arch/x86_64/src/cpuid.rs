//! CPUID for each vCPU: what KVM supports, with the topology leaves describing our `-smp`
//! layout and optional feature flags switched on or off with `-cpu host,+flag,-flag`.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};
use thiserror::Error;

use crate::topology::Topology;

/// Errors adjusting CPUID.
#[derive(Debug, Error)]
pub enum CpuidError {
    /// A `-cpu` flag we do not know.
    #[error("unknown CPU feature '{0}'")]
    UnknownFeature(String),
}

#[derive(Clone, Copy)]
enum Reg {
    Ecx,
    Edx,
    Ebx,
}

/// (name, leaf, subleaf, register, bit) of the feature flags `-cpu` can toggle.
const FEATURES: &[(&str, u32, u32, Reg, u32)] = &[
    ("vmx", 1, 0, Reg::Ecx, 5),
    ("x2apic", 1, 0, Reg::Ecx, 21),
    ("tsc-deadline", 1, 0, Reg::Ecx, 24),
    ("xsave", 1, 0, Reg::Ecx, 26),
    ("avx", 1, 0, Reg::Ecx, 28),
    ("rdrand", 1, 0, Reg::Ecx, 30),
    ("hypervisor", 1, 0, Reg::Ecx, 31),
    ("avx2", 7, 0, Reg::Ebx, 5),
    ("avx512f", 7, 0, Reg::Ebx, 16),
    ("arch-capabilities", 7, 0, Reg::Edx, 29),
    ("svm", 0x8000_0001, 0, Reg::Ecx, 2),
    ("pdpe1gb", 0x8000_0001, 0, Reg::Edx, 26),
    ("rdtscp", 0x8000_0001, 0, Reg::Edx, 27),
];

/// Names of the flags `-cpu` accepts.
pub fn feature_names() -> impl Iterator<Item = &'static str> {
    FEATURES.iter().map(|f| f.0)
}

/// Checks a `-cpu` flag list before any vCPU is built.
pub fn validate_features(features: &[(String, bool)]) -> Result<(), CpuidError> {
    for (name, _) in features {
        if !FEATURES.iter().any(|f| f.0 == name) {
            return Err(CpuidError::UnknownFeature(name.clone()));
        }
    }
    Ok(())
}

/// Applies feature toggles; XSAVE off also clears what depends on it.
pub fn apply_features(cpuid: &mut CpuId, features: &[(String, bool)]) -> Result<(), CpuidError> {
    validate_features(features)?;
    for (name, on) in features {
        let &(_, leaf, subleaf, reg, bit) = FEATURES
            .iter()
            .find(|f| f.0 == name)
            .expect("validated above");
        for e in cpuid.as_mut_slice() {
            if e.function == leaf && e.index == subleaf {
                let r = match reg {
                    Reg::Ecx => &mut e.ecx,
                    Reg::Edx => &mut e.edx,
                    Reg::Ebx => &mut e.ebx,
                };
                if *on {
                    *r |= 1 << bit;
                } else {
                    *r &= !(1 << bit);
                }
            }
        }
        if name == "xsave" && !on {
            // OSXSAVE (leaf 1 ECX bit 27) and AVX need XSAVE, and leaf 0xd describes it.
            for e in cpuid.as_mut_slice() {
                match e.function {
                    1 => e.ecx &= !((1 << 27) | (1 << 28)),
                    0xd => (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0),
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Fills in the per-vCPU leaves: APIC ID, logical processor counts, cache sharing and the
/// extended topology leaves 0xb and 0x1f.
pub fn apply_topology(cpuid: &mut CpuId, topo: &Topology, vcpu_index: u32) {
    let apic_id = topo.apic_id(vcpu_index);
    let per_package = topo.threads_per_package();
    let smt_shift = topo.thread_bits();
    let core_shift = smt_shift + topo.core_bits();
    let die_shift = core_shift + topo.die_bits();
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0xffff) | (per_package.min(255) << 16) | ((apic_id & 0xff) << 24);
                if per_package > 1 {
                    e.edx |= 1 << 28;
                } else {
                    e.edx &= !(1 << 28);
                }
                e.ecx |= 1 << 31;
            }
            4 => {
                let cache_level = (e.eax >> 5) & 7;
                let sharing = if cache_level >= 3 {
                    topo.threads_per_die()
                } else {
                    topo.threads
                };
                let cores_field = (topo.cores * topo.dies).min(64) - 1;
                e.eax = (e.eax & 0x3fff) | ((sharing - 1).min(4095) << 14) | (cores_field << 26);
            }
            0xb => set_ext_topology(e, topo, apic_id, smt_shift, core_shift, false),
            0x1f => {
                set_ext_topology(e, topo, apic_id, smt_shift, core_shift, true);
                if e.index == 2 {
                    e.eax = die_shift;
                    e.ebx = per_package;
                    e.ecx = (5 << 8) | 2;
                }
            }
            0x8000_0008 => {
                e.ecx = (e.ecx & !0xf0ff) | (per_package - 1).min(255);
            }
            _ => {}
        }
    }
}

fn set_ext_topology(
    e: &mut kvm_cpuid_entry2,
    topo: &Topology,
    apic_id: u32,
    smt_shift: u32,
    core_shift: u32,
    has_die_level: bool,
) {
    e.edx = apic_id;
    match e.index {
        0 => {
            e.eax = smt_shift;
            e.ebx = topo.threads;
            e.ecx = 1 << 8;
        }
        1 => {
            e.eax = core_shift;
            e.ebx = topo.threads_per_die();
            e.ecx = (2 << 8) | 1;
        }
        n => {
            // Level type 0 ends the enumeration; the die level is filled in by the caller.
            e.eax = 0;
            e.ebx = 0;
            e.ecx = n & 0xff;
            if has_die_level && n == 2 {
                e.ecx = n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> CpuId {
        let leaves = [
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0x0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 0,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 2,
                ..Default::default()
            },
        ];
        CpuId::from_entries(&leaves).unwrap()
    }

    #[test]
    fn topology_leaves() {
        let topo = Topology {
            sockets: 1,
            dies: 1,
            cores: 4,
            threads: 2,
        };
        let mut c = base();
        apply_topology(&mut c, &topo, 5);
        let s = c.as_slice();
        assert_eq!(s[0].ebx >> 24, topo.apic_id(5));
        assert_eq!((s[0].ebx >> 16) & 0xff, 8);
        assert_eq!((s[1].eax, s[1].ebx, s[1].ecx >> 8), (1, 2, 1));
        assert_eq!((s[2].eax, s[2].ebx, s[2].ecx >> 8), (3, 8, 2));
        assert_eq!(s[3].ecx >> 8, 0);
        assert_eq!(s[2].edx, topo.apic_id(5));
    }

    #[test]
    fn feature_toggles() {
        let mut c = base();
        c.as_mut_slice()[0].ecx = 1 << 26 | 1 << 27;
        apply_features(&mut c, &[("xsave".into(), false)]).unwrap();
        assert_eq!(c.as_slice()[0].ecx, 0);
        assert!(apply_features(&mut c, &[("warp-drive".into(), true)]).is_err());
    }
}
