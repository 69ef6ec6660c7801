//! `-smp [cpus=]n[,maxcpus=m][,sockets=s][,dies=d][,cores=c][,threads=t]`.
//!
//! Missing values are computed the way QEMU's `machine_parse_smp_config` does for PC
//! machines, which support dies but not clusters. Which of sockets and cores absorbs the
//! remaining CPUs depends on the machine version: cores since QEMU 6.2, sockets before, so the
//! topology is resolved only once `-machine` is known. Several `-smp` options merge key by
//! key, later values winning.

use super::config::SmpConfig;
use super::error::ArgError;
use super::opts::{parse_u32, Opts, Syntax};

/// The `-smp` keys seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SmpArgs {
    cpus: Option<u32>,
    maxcpus: Option<u32>,
    sockets: Option<u32>,
    dies: Option<u32>,
    clusters: Option<u32>,
    cores: Option<u32>,
    threads: Option<u32>,
}

impl SmpArgs {
    /// Parses one `-smp` argument and merges it in.
    pub fn merge(&mut self, arg: &str) -> Result<(), ArgError> {
        let opts = Opts::parse(arg, Some("cpus"), Syntax::Keyval)?;
        opts.check_known(&[
            "cpus", "maxcpus", "sockets", "dies", "clusters", "cores", "threads",
        ])?;
        for (key, value) in opts.iter() {
            let n = Some(parse_u32(key, value)?);
            match key {
                "cpus" => self.cpus = n,
                "maxcpus" => self.maxcpus = n,
                "sockets" => self.sockets = n,
                "dies" => self.dies = n,
                "clusters" => self.clusters = n,
                "cores" => self.cores = n,
                _ => self.threads = n,
            }
        }
        Ok(())
    }

    /// The complete topology. `prefer_sockets` is QEMU's behaviour for machine types older
    /// than 6.2.
    pub fn resolve(&self, prefer_sockets: bool) -> Result<SmpConfig, ArgError> {
        let all = [
            self.cpus,
            self.maxcpus,
            self.sockets,
            self.dies,
            self.clusters,
            self.cores,
            self.threads,
        ];
        if all.contains(&Some(0)) {
            return Err(ArgError::ZeroTopology);
        }
        // Clusters are an Arm notion; QEMU accepts clusters=1 on PC as a no-op.
        if self.clusters.is_some_and(|c| c > 1) {
            return Err(ArgError::ClustersUnsupported);
        }
        let dies = self.dies.unwrap_or(1);
        // 0 stands for "not given" from here on, as in QEMU.
        let cpus = self.cpus.unwrap_or(0);
        let mut maxcpus = self.maxcpus.unwrap_or(0);
        let mut sockets = self.sockets.unwrap_or(0);
        let mut cores = self.cores.unwrap_or(0);
        let mut threads = self.threads.unwrap_or(0);
        let or_one = |v: u32| if v > 0 { v } else { 1 };

        if cpus == 0 && maxcpus == 0 {
            sockets = or_one(sockets);
            cores = or_one(cores);
            threads = or_one(threads);
        } else {
            if maxcpus == 0 {
                maxcpus = cpus;
            }
            if prefer_sockets {
                if sockets == 0 {
                    cores = or_one(cores);
                    threads = or_one(threads);
                    sockets = quotient(maxcpus, &[dies, cores, threads]);
                } else if cores == 0 {
                    threads = or_one(threads);
                    cores = quotient(maxcpus, &[sockets, dies, threads]);
                }
            } else if cores == 0 {
                sockets = or_one(sockets);
                threads = or_one(threads);
                cores = quotient(maxcpus, &[sockets, dies, threads]);
            } else if sockets == 0 {
                threads = or_one(threads);
                sockets = quotient(maxcpus, &[dies, cores, threads]);
            }
            if threads == 0 {
                threads = quotient(maxcpus, &[sockets, dies, cores]);
            }
        }

        let total = product(&[sockets, dies, cores, threads]);
        if maxcpus == 0 {
            // Only sockets/dies/cores/threads were given: they define the total.
            maxcpus = u32::try_from(total.unwrap_or(u128::MAX)).unwrap_or(0);
        }
        let cpus = if cpus > 0 { cpus } else { maxcpus };
        let topology = || {
            format!("sockets ({sockets}) * dies ({dies}) * cores ({cores}) * threads ({threads})")
        };
        if total != Some(u128::from(maxcpus)) || maxcpus == 0 {
            return Err(ArgError::TopologyMismatch {
                topology: topology(),
                maxcpus,
            });
        }
        if maxcpus < cpus {
            return Err(ArgError::CpusAboveMaxcpus {
                topology: topology(),
                maxcpus,
                cpus,
            });
        }
        Ok(SmpConfig {
            cpus,
            maxcpus,
            sockets,
            dies,
            cores,
            threads,
        })
    }
}

/// The product, or `None` if it overflows (which can only mean it exceeds any `u32`).
fn product(factors: &[u32]) -> Option<u128> {
    factors
        .iter()
        .try_fold(1u128, |acc, &f| acc.checked_mul(u128::from(f)))
}

/// `n / (product of factors)`, QEMU's integer division; the factors are all non-zero here.
fn quotient(n: u32, factors: &[u32]) -> u32 {
    match product(factors) {
        Some(d) if d > 0 => u32::try_from(u128::from(n) / d).unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smp(arg: &str, prefer_sockets: bool) -> Result<SmpConfig, ArgError> {
        let mut s = SmpArgs::default();
        s.merge(arg)?;
        s.resolve(prefer_sockets)
    }

    /// (cpus, maxcpus, sockets, dies, cores, threads)
    fn topo(arg: &str) -> (u32, u32, u32, u32, u32, u32) {
        let c = smp(arg, false).unwrap();
        (c.cpus, c.maxcpus, c.sockets, c.dies, c.cores, c.threads)
    }

    fn topo_old(arg: &str) -> (u32, u32, u32, u32, u32, u32) {
        let c = smp(arg, true).unwrap();
        (c.cpus, c.maxcpus, c.sockets, c.dies, c.cores, c.threads)
    }

    #[test]
    fn default_is_one_cpu() {
        assert_eq!(topo(""), (1, 1, 1, 1, 1, 1));
    }

    #[test]
    fn cores_preferred_since_6_2() {
        assert_eq!(topo("4"), (4, 4, 1, 1, 4, 1));
        assert_eq!(topo("cpus=4"), (4, 4, 1, 1, 4, 1));
        assert_eq!(topo("8,sockets=2"), (8, 8, 2, 1, 4, 1));
        assert_eq!(topo("8,cores=2"), (8, 8, 4, 1, 2, 1));
        assert_eq!(topo("8,sockets=2,cores=2"), (8, 8, 2, 1, 2, 2));
        assert_eq!(topo("8,threads=2"), (8, 8, 1, 1, 4, 2));
        assert_eq!(topo("16,dies=2,sockets=2"), (16, 16, 2, 2, 4, 1));
    }

    #[test]
    fn sockets_preferred_before_6_2() {
        assert_eq!(topo_old("4"), (4, 4, 4, 1, 1, 1));
        assert_eq!(topo_old("8,cores=2"), (8, 8, 4, 1, 2, 1));
        assert_eq!(topo_old("8,sockets=2"), (8, 8, 2, 1, 4, 1));
        assert_eq!(topo_old("8,threads=2"), (8, 8, 4, 1, 1, 2));
    }

    #[test]
    fn maxcpus() {
        assert_eq!(topo("2,maxcpus=8"), (2, 8, 1, 1, 8, 1));
        assert_eq!(topo("maxcpus=8"), (8, 8, 1, 1, 8, 1));
        assert_eq!(topo("2,maxcpus=8,sockets=2"), (2, 8, 2, 1, 4, 1));
    }

    #[test]
    fn topology_only() {
        assert_eq!(topo("sockets=2,cores=3,threads=2"), (12, 12, 2, 1, 3, 2));
        assert_eq!(topo("sockets=2"), (2, 2, 2, 1, 1, 1));
        assert_eq!(topo("dies=2"), (2, 2, 1, 2, 1, 1));
    }

    #[test]
    fn clusters_one_is_accepted() {
        assert_eq!(topo("4,clusters=1"), (4, 4, 1, 1, 4, 1));
        assert_eq!(
            smp("4,clusters=2", false),
            Err(ArgError::ClustersUnsupported)
        );
    }

    #[test]
    fn mismatched_product() {
        assert_eq!(
            smp("4,sockets=3", false),
            Err(ArgError::TopologyMismatch {
                topology: "sockets (3) * dies (1) * cores (1) * threads (1)".into(),
                maxcpus: 4
            })
        );
        assert_eq!(
            smp("2,sockets=4", false),
            Err(ArgError::TopologyMismatch {
                topology: "sockets (4) * dies (1) * cores (0) * threads (1)".into(),
                maxcpus: 2
            })
        );
        assert!(matches!(
            smp("8,sockets=2,cores=2,threads=3", false),
            Err(ArgError::TopologyMismatch { .. })
        ));
    }

    #[test]
    fn cpus_above_maxcpus() {
        assert_eq!(
            smp("8,maxcpus=4", false),
            Err(ArgError::CpusAboveMaxcpus {
                topology: "sockets (1) * dies (1) * cores (4) * threads (1)".into(),
                maxcpus: 4,
                cpus: 8
            })
        );
        assert!(matches!(
            smp("8,maxcpus=4,sockets=2", false),
            Err(ArgError::CpusAboveMaxcpus { .. })
        ));
    }

    #[test]
    fn zero_is_rejected() {
        for a in [
            "0",
            "4,sockets=0",
            "4,maxcpus=0",
            "4,dies=0",
            "4,threads=0",
            "4,clusters=0",
        ] {
            assert_eq!(smp(a, false), Err(ArgError::ZeroTopology), "{a}");
        }
    }

    #[test]
    fn huge_values_do_not_overflow() {
        assert!(matches!(
            smp(
                "sockets=4294967295,cores=4294967295,threads=4294967295,dies=4294967295",
                false
            ),
            Err(ArgError::TopologyMismatch { .. })
        ));
        assert_eq!(topo("4294967295"), (u32::MAX, u32::MAX, 1, 1, u32::MAX, 1));
        assert!(smp("4294967295,sockets=2", true).is_err());
    }

    #[test]
    fn merging() {
        let mut s = SmpArgs::default();
        s.merge("4").unwrap();
        s.merge("sockets=2").unwrap();
        assert_eq!(s.resolve(false).unwrap().cores, 2);
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            smp("four", false),
            Err(ArgError::ExpectsNumber("cpus".into()))
        );
        assert_eq!(
            smp("4,cores=-1", false),
            Err(ArgError::ExpectsNumber("cores".into()))
        );
        assert_eq!(
            smp("4,books=2", false),
            Err(ArgError::UnknownParameter("books".into()))
        );
        assert_eq!(
            smp("4,sockets", false),
            Err(ArgError::ExpectedEquals("sockets".into()))
        );
    }
}
