//! TLS for registries with the system's roots, loaded on the first TLS connection only.
//!
//! Reading and parsing `/etc/ssl/certs` costs several milliseconds, and most strata commands
//! that make a client (a loopback registry, a build whose base image is local) never open a
//! TLS connection. ureq's own default builds its configuration when an agent is made, so the
//! client hands it this connector instead.

use std::sync::{Arc, OnceLock};

use ureq::rustls;
use ureq::{ReadWrite, TlsConnector};

/// A [`TlsConnector`] whose rustls configuration (system roots) is made on first use and then
/// shared by every client in the process.
#[derive(Debug, Default)]
pub(crate) struct SystemRoots;

impl TlsConnector for SystemRoots {
    fn connect(
        &self,
        dns_name: &str,
        io: Box<dyn ReadWrite>,
    ) -> Result<Box<dyn ReadWrite>, ureq::Error> {
        static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
        CONFIG.get_or_init(system_config).connect(dns_name, io)
    }
}

fn system_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match rustls_native_certs::load_native_certs() {
        Ok(certs) => {
            let (valid, invalid) = roots.add_parsable_certificates(certs);
            if valid == 0 {
                tracing::warn!("no usable system root certificates ({invalid} unparsable): TLS connections will fail");
            }
        }
        Err(e) => tracing::warn!("loading the system root certificates: {e}"),
    }
    let config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
    .expect("the ring provider supports TLS 1.2 and 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;

    use crate::client::{Client, ClientOptions};

    #[test]
    fn registries_not_named_insecure_are_reached_over_tls() {
        // 127.0.0.2 is loopback but not one of the names plain HTTP is allowed for: the client
        // must open a TLS handshake (a record starting 0x16 0x03) through the lazy connector.
        let listener = TcpListener::bind("127.0.0.2:0").expect("127.0.0.2 is loopback on Linux");
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = [0u8; 2];
            conn.read_exact(&mut head).unwrap();
            head
        });
        let client = Client::new(&format!("127.0.0.2:{port}"), ClientOptions::default());
        let err = client
            .ping()
            .expect_err("a server that closes the handshake was accepted");
        assert_eq!(server.join().unwrap(), [0x16, 0x03]);
        let msg = err.to_string();
        assert!(msg.contains("https://127.0.0.2"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}
