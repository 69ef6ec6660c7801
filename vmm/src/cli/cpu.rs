//! `-cpu model[,+feat|-feat|feat=on|off|feat...]`.
//!
//! This is not QemuOpts syntax: like QEMU's x86 feature parser, the features are split on
//! every comma (no `,,` escape) and empty elements are skipped.

use super::config::{CpuConfig, CpuModel, ListTopic};
use super::error::ArgError;
use super::opts::{is_help, parse_bool, Parsed};

/// The CPU when `-cpu` is absent: petrel always exposes the host CPU.
pub(crate) fn default_cpu() -> CpuConfig {
    CpuConfig {
        model: CpuModel::Host,
        features: Vec::new(),
    }
}

/// Parses a `-cpu` argument.
pub(crate) fn parse_cpu(arg: &str) -> Result<Parsed<CpuConfig>, ArgError> {
    let (model, features) = arg.split_once(',').unwrap_or((arg, ""));
    let model = match model {
        "" => return Err(ArgError::EmptyCpuModel),
        m if is_help(m) => return Ok(Parsed::List(ListTopic::Cpus)),
        // Under KVM, QEMU's "max" is "host".
        "host" | "max" => CpuModel::Host,
        m => return Err(ArgError::UnsupportedCpuModel(m.to_owned())),
    };

    // QEMU applies `+feat` and `-feat` after every `feat=on|off`, minus after plus, wherever
    // they were written; emitting them in that order lets the VMM simply apply the list.
    let mut assigned = Vec::new();
    let mut plus = Vec::new();
    let mut minus = Vec::new();
    for element in features.split(',').filter(|e| !e.is_empty()) {
        if let Some(name) = element.strip_prefix('+') {
            plus.push((feature_name(name)?, true));
        } else if let Some(name) = element.strip_prefix('-') {
            minus.push((feature_name(name)?, false));
        } else if let Some((name, value)) = element.split_once('=') {
            let name = feature_name(name)?;
            let on = parse_bool(&name, value)?;
            assigned.push((name, on));
        } else {
            assigned.push((feature_name(element)?, true));
        }
    }
    assigned.extend(plus);
    assigned.extend(minus);
    Ok(Parsed::Value(CpuConfig {
        model,
        features: assigned,
    }))
}

/// A feature name with QEMU's legacy `_` spelling turned into `-`.
fn feature_name(name: &str) -> Result<String, ArgError> {
    if name.is_empty() {
        return Err(ArgError::InvalidCpuFeature(name.to_owned()));
    }
    Ok(name.replace('_', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(arg: &str) -> Vec<(String, bool)> {
        match parse_cpu(arg) {
            Ok(Parsed::Value(cpu)) => cpu.features,
            other => panic!("{other:?}"),
        }
    }

    fn f(name: &str, on: bool) -> (String, bool) {
        (name.to_owned(), on)
    }

    #[test]
    fn models() {
        assert_eq!(parse_cpu("host"), Ok(Parsed::Value(default_cpu())));
        assert_eq!(parse_cpu("max"), Ok(Parsed::Value(default_cpu())));
        assert_eq!(parse_cpu("help"), Ok(Parsed::List(ListTopic::Cpus)));
        assert_eq!(parse_cpu("?"), Ok(Parsed::List(ListTopic::Cpus)));
        assert_eq!(
            parse_cpu("qemu64"),
            Err(ArgError::UnsupportedCpuModel("qemu64".into()))
        );
        assert_eq!(
            parse_cpu("Host"),
            Err(ArgError::UnsupportedCpuModel("Host".into()))
        );
        assert_eq!(parse_cpu(""), Err(ArgError::EmptyCpuModel));
        assert_eq!(parse_cpu(",+x2apic"), Err(ArgError::EmptyCpuModel));
    }

    #[test]
    fn feature_forms() {
        assert_eq!(
            features("host,+avx2,-x2apic,pmu=off,invtsc,kvm=on,la57=no"),
            vec![
                f("pmu", false),
                f("invtsc", true),
                f("kvm", true),
                f("la57", false),
                f("avx2", true),
                f("x2apic", false),
            ]
        );
    }

    #[test]
    fn qemu_precedence_is_folded_into_the_order() {
        // "-x2apic,x2apic=on" leaves x2apic off in QEMU; minus beats plus.
        assert_eq!(
            features("host,-x2apic,x2apic=on,+pcid,-pcid"),
            vec![
                f("x2apic", true),
                f("pcid", true),
                f("x2apic", false),
                f("pcid", false),
            ]
        );
    }

    #[test]
    fn underscores_and_empty_elements() {
        assert_eq!(
            features("host,,hv_relaxed,,+tsc_deadline,"),
            vec![f("hv-relaxed", true), f("tsc-deadline", true)]
        );
    }

    #[test]
    fn bad_features() {
        assert_eq!(
            parse_cpu("host,+"),
            Err(ArgError::InvalidCpuFeature(String::new()))
        );
        assert_eq!(
            parse_cpu("host,=on"),
            Err(ArgError::InvalidCpuFeature(String::new()))
        );
        // Non-boolean properties (phys-bits=, hv-spinlocks=) are not supported.
        assert_eq!(
            parse_cpu("host,phys-bits=40"),
            Err(ArgError::ExpectsBool("phys-bits".into()))
        );
        assert_eq!(
            parse_cpu("host,hv_spinlocks=0x1fff"),
            Err(ArgError::ExpectsBool("hv-spinlocks".into()))
        );
    }
}
