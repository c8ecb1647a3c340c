//! `certs`: a CA and a serving pair for the webhook's Service, written to a directory, and the
//! caBundle printed for the MutatingWebhookConfiguration.

use crate::commands::cli::CertsArgs;
use crate::tls;

/// Errors are only printed (by `main`), hence `anyhow`.
pub fn certs(args: &CertsArgs) -> anyhow::Result<()> {
    let mut names = tls::service_names(&args.service, &args.namespace);
    names.extend(args.extra_names.iter().filter(|n| !n.is_empty()).cloned());
    let generated = tls::generate(&names, args.validity)?;
    let (cert, key) = tls::write_dir(&args.out_dir, &generated)?;
    eprintln!(
        "wrote {}, {} and the CA ({}/ca.crt) for {}",
        cert.display(),
        key.display(),
        args.out_dir.display(),
        names.join(", ")
    );
    eprintln!("caBundle for the MutatingWebhookConfiguration:");
    println!("{}", generated.ca_bundle());
    Ok(())
}
