//! `tern cluster-ca --out DIR`: makes the cluster CA whose certificate and
//! key every node of a cluster loads (`ca.pem`, and `ca.key` with mode
//! 0600); each node issues itself a certificate from it at start-up
//! (`tern_server::cluster::ClusterTls`). Refuses to replace an existing CA
//! unless `--force`: a new CA cuts the running nodes off from new ones.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tern_server::cluster::ClusterTls;

/// File name of the CA certificate.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key.
pub const CA_KEY_FILE: &str = "ca.key";

#[derive(clap::Args, Debug)]
pub struct ClusterCaArgs {
    /// Directory to write ca.pem and ca.key into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing CA there (every node must then get the new files).
    #[arg(long)]
    force: bool,
}

pub fn run(args: ClusterCaArgs) -> Result<(), String> {
    let (cert, key) = write_ca(&args.out, args.force)?;
    println!("wrote {} and {} (mode 0600)", cert.display(), key.display());
    println!("give both files to every node of the cluster; keep the key secret");
    Ok(())
}

/// Makes a CA and writes it into `dir`: the paths of the certificate and key.
fn write_ca(dir: &Path, force: bool) -> Result<(PathBuf, PathBuf), String> {
    let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    if !force && (cert_path.exists() || key_path.exists()) {
        return Err(format!(
            "{} already holds a cluster CA: nodes loading a new one cannot talk to nodes on the old; pass --force to replace it anyway",
            dir.display()
        ));
    }
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (cert, key) = ClusterTls::generate_ca().map_err(|e| format!("cannot make the CA: {e}"))?;
    write_file(&key_path, key.as_bytes(), 0o600)?;
    write_file(&cert_path, cert.as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

/// Writes `bytes` to `path` through a temporary file created with `mode`
/// and renamed into place.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(fail)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(fail)?;
    fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_written_once_with_a_private_key_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cluster");
        let (cert, key) = write_ca(&out, false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (cert_pem, key_pem) = (
            fs::read_to_string(&cert).unwrap(),
            fs::read_to_string(&key).unwrap(),
        );
        let tls = ClusterTls::load(&cert_pem, &key_pem, "tern-0").unwrap();
        assert_eq!(tls.node_id(), "tern-0");
        let refused = write_ca(&out, false).unwrap_err();
        assert!(refused.contains("--force"), "{refused}");
        assert_eq!(fs::read_to_string(&key).unwrap(), key_pem);
        write_ca(&out, true).unwrap();
        assert_ne!(fs::read_to_string(&key).unwrap(), key_pem);
    }
}
