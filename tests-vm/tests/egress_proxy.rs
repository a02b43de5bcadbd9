//! The egress proxy's CA in a real VM: installed with the image's own
//! `update-ca-certificates`, or appended to the image's trust bundle when it
//! has no tool; a malformed PEM ends the boot with 78 and hypeman's message.

use anyhow::{ensure, Result};
use guest_contract::config::EgressProxy;
use tests_vm::guest::Guest;

/// A real certificate (openssl, P-256, self-signed), kept with init's tests.
const CA: &str = include_str!("../../init/contract/tests/data/proxy-ca.pem");
const BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// A stand-in for Debian's tool: rebuilds the bundle from the certificates
/// folder, as the real one does.
const TOOL: &str = "#!/bin/sh\nset -e\nmkdir -p /etc/ssl/certs\ncat /usr/local/share/ca-certificates/*.crt > /etc/ssl/certs/ca-certificates.crt\necho tool-ran\n";

fn with_proxy(pem: &str) -> impl FnOnce(&mut guest_contract::config::Config) + '_ {
    move |c| {
        c.egress_proxy = Some(EgressProxy {
            enabled: Some(true),
            proxy_url: Some("http://10.0.2.2:3128".into()),
            ca_cert_pem: Some(pem.into()),
        })
    }
}

#[test]
fn the_ca_lands_in_the_images_bundle_with_or_without_its_tool() -> Result<()> {
    let mut g = Guest::new("egress-ca-bundle", &["/bin/cat", BUNDLE]).with_config(with_proxy(CA));
    g.image_files = vec![(BUNDLE.into(), b"# the image's own roots\n".to_vec(), 0o644)];
    let out = g.run()?;
    ensure!(out.log.contains("# the image's own roots"), "{}", out.log);
    ensure!(out.log.replace('\r', "").contains(CA), "{}", out.log);
    ensure!(out.exit_line()? == r#"HYPEMAN-EXIT code=0 message="success""#);

    let mut g = Guest::new("egress-ca-tool", &["/bin/cat", BUNDLE]).with_config(with_proxy(CA));
    g.image_files = vec![(
        "usr/sbin/update-ca-certificates".into(),
        TOOL.as_bytes().to_vec(),
        0o755,
    )];
    let out = g.run()?;
    ensure!(out.has_line("tool-ran"), "{}", out.log);
    ensure!(out.log.replace('\r', "").contains(CA), "{}", out.log);
    ensure!(out.exit_line()? == r#"HYPEMAN-EXIT code=0 message="success""#);
    Ok(())
}

#[test]
fn a_malformed_ca_is_exit_78_with_hypemans_message() -> Result<()> {
    let broken = CA.replace("-----END CERTIFICATE-----", "");
    let g = Guest::new("egress-ca-bad", &["/bin/true"]).with_config(with_proxy(&broken));
    let out = g.run()?;
    ensure!(
        out.exit_line()?
            == r#"HYPEMAN-EXIT code=78 message="egress proxy CA certificate setup failed: certificate 1 has no END line""#,
        "{}",
        out.log
    );
    ensure!(!out.log.contains("HYPEMAN-PROGRAM-START"), "{}", out.log);
    Ok(())
}
