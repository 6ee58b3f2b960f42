//! `tern tls-identity --out DIR`: makes the self-signed TLS identity a
//! server otherwise makes in its data directory (`cert.der`, `key.der`,
//! mode 0600) and prints its fingerprint, for servers that must share one
//! (`tls_dir`: several nodes behind one address, where a client pins a
//! single fingerprint). Refuses to replace an identity unless `--force`:
//! clients pinning the old fingerprint would refuse the new one.

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct TlsIdentityArgs {
    /// Directory to write cert.der and key.der into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Replace an identity there (clients must then pin the new fingerprint).
    #[arg(long)]
    force: bool,
}

pub fn run(args: TlsIdentityArgs) -> Result<(), String> {
    let identity =
        tern_server::tls::create_identity_in(&args.out, args.force).map_err(|e| e.to_string())?;
    println!(
        "wrote cert.der and key.der (mode 0600) in {}",
        args.out.display()
    );
    println!("certificate fingerprint: {}", identity.fingerprint);
    println!("give the directory to every node as tls_dir (TERN_TLS_DIR); keep key.der secret");
    Ok(())
}
