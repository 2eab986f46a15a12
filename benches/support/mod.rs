//! Rule files of any size for the benches: `n` containers `c0`… with
//! fixed addresses in 198.19.0.0/16, and the access entries a bench gives.

use portcullis::policy::Policy;

/// Compiles a rule file of `containers` containers and `access` (JSON
/// access entries).
pub fn policy(containers: usize, access: &[String]) -> Policy {
    let names: Vec<String> = (0..containers)
        .map(|i| {
            format!(
                "\"c{i}\": {{ \"address\": \"198.19.{}.{}\" }}",
                i / 250,
                i % 250 + 2
            )
        })
        .collect();
    let text = format!(
        "{{\"version\":1,\"containers\":{{{}}},\"access\":[{}]}}",
        names.join(","),
        access.join(",")
    );
    Policy::compile(portcullis::rules::parse("large.json", &text).expect("valid"))
        .expect("compiles")
}
