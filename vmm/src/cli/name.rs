//! `-name [guest=]name[,process=name][,debug-threads=on|off]`.
//!
//! Several `-name` options merge key by key, later values winning, as in QEMU.

use super::error::ArgError;
use super::opts::{Opts, Syntax};

/// The `-name` keys seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NameArgs {
    /// `guest=`: the guest name.
    pub guest: Option<String>,
    /// `process=`: the process name.
    pub process: Option<String>,
    /// `debug-threads=`: name threads after their job.
    pub debug_threads: bool,
}

impl NameArgs {
    /// Parses one `-name` argument and merges it in.
    pub fn merge(&mut self, arg: &str) -> Result<(), ArgError> {
        let opts = Opts::parse(arg, Some("guest"), Syntax::QemuOpts)?;
        opts.check_known(&["guest", "process", "debug-threads"])?;
        if let Some(guest) = opts.get("guest") {
            self.guest = Some(guest.to_owned());
        }
        if let Some(process) = opts.get("process") {
            self.process = Some(process.to_owned());
        }
        if let Some(debug_threads) = opts.get_bool("debug-threads")? {
            self.debug_threads = debug_threads;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(args: &[&str]) -> Result<NameArgs, ArgError> {
        let mut n = NameArgs::default();
        for a in args {
            n.merge(a)?;
        }
        Ok(n)
    }

    #[test]
    fn plain_name() {
        assert_eq!(
            name(&["vm1"]),
            Ok(NameArgs {
                guest: Some("vm1".into()),
                process: None,
                debug_threads: false
            })
        );
        assert_eq!(name(&["a,,b"]).unwrap().guest.as_deref(), Some("a,b"));
    }

    #[test]
    fn all_keys() {
        assert_eq!(
            name(&["guest=vm1,process=qemu-vm1,debug-threads=on"]),
            Ok(NameArgs {
                guest: Some("vm1".into()),
                process: Some("qemu-vm1".into()),
                debug_threads: true
            })
        );
        assert!(name(&["vm1,debug-threads"]).unwrap().debug_threads);
    }

    #[test]
    fn merged() {
        let n = name(&["vm1,debug-threads=on", "process=p"]).unwrap();
        assert_eq!(n.guest.as_deref(), Some("vm1"));
        assert_eq!(n.process.as_deref(), Some("p"));
        assert!(n.debug_threads);
    }

    #[test]
    fn errors() {
        assert_eq!(
            name(&["vm1,debug-threads=maybe"]),
            Err(ArgError::ExpectsBool("debug-threads".into()))
        );
        assert_eq!(
            name(&["vm1,id=x"]),
            Err(ArgError::UnknownParameter("id".into()))
        );
    }
}
