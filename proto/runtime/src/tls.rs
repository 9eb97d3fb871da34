//! The TLS crypto provider of every process: ring.
//!
//! rustls chooses its process-wide provider from its crate features and
//! panics when it cannot (more than one compiled in). The lake's S3 client
//! (opendal, through iceberg-rust) brings aws-lc-rs besides the ring that
//! tonic's TLS uses, so every TLS configuration is built after
//! [`install_provider`] has made ring the process default explicitly.

/// Makes ring rustls's process-wide provider (once; a provider another
/// part of the program installed first stays).
pub fn install_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: one was installed already, which is what is needed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_provider_is_installed_even_with_two_compiled_in() {
        super::install_provider();
        super::install_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        // Building a TLS config no longer has to guess.
        let _ = rustls::ServerConfig::builder();
    }
}
