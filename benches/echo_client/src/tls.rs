//! TLS for `--tls`: rustls (ring crypto) over a non-blocking mio TcpStream.
//!
//! `TlsStream` offers the same `read`/`write` shape as a plain socket, so the
//! closed-loop pump in `load.rs` drives both alike, plus `flush` for the TLS
//! records rustls still holds. The edge-triggered poll's rule is kept: each
//! call returns `WouldBlock` only when the socket itself did.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// One client configuration for all connections: trust the CA(s) in
/// `ca_pem`, default (TLS 1.3 first) versions and cipher suites.
pub fn client_config(ca_pem: &str) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_pem).map_err(|e| format!("{ca_pem}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{ca_pem}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("{ca_pem}: bad CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{ca_pem}: no certificate found"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS config: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name to verify the server's certificate against: the host part of
/// HOST:PORT (an IP address needs an IP SAN in the certificate).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = match addr.rsplit_once(':') {
        Some((host, _port)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    ServerName::try_from(host.to_string()).map_err(|e| format!("bad TLS server name {host}: {e}"))
}

/// Bytes read from the socket per `read` call. rustls' own `read_tls`
/// reads at most 4 KiB at a time, which would cost some 30 syscalls per
/// 100 KiB echo; the client reads big chunks and feeds rustls from them.
const READ_CHUNK: usize = 64 * 1024;

pub struct TlsStream {
    sock: TcpStream,
    tls: ClientConnection,
    /// Ciphertext read from the socket and not yet given to rustls:
    /// `inbuf[inpos..inlen]`.
    inbuf: Box<[u8]>,
    inpos: usize,
    inlen: usize,
}

impl TlsStream {
    pub fn new(
        sock: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<TlsStream> {
        let mut tls = ClientConnection::new(config, name).map_err(io::Error::other)?;
        // Take a whole request at once, even before the handshake is done:
        // then no plaintext ever waits outside rustls for a writable edge,
        // and everything pending is sent by `flush` (at the start of every
        // pump and after every record read). At most one request is held.
        tls.set_buffer_limit(None);
        Ok(TlsStream {
            sock,
            tls,
            inbuf: vec![0; READ_CHUNK].into_boxed_slice(),
            inpos: 0,
            inlen: 0,
        })
    }

    pub fn socket(&mut self) -> &mut TcpStream {
        &mut self.sock
    }

    /// Send the TLS records rustls holds until it holds none (`Ok`) or the
    /// socket is full (`WouldBlock`).
    pub fn flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `flush`, where a full socket is not an error: the records wait in
    /// rustls until the next writable edge (the pump flushes first thing).
    fn flush_some(&mut self) -> io::Result<()> {
        match self.flush() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    /// Hand plaintext to rustls (all of it: the buffer is unlimited; it is
    /// encrypted now, or when the handshake completes) and send what the
    /// socket takes.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.tls.writer().write(buf)?;
        self.flush_some()?;
        Ok(n)
    }

    /// Decrypted bytes, reading and processing records from the socket as
    /// needed. `Ok(0)` means the server closed the connection. `WouldBlock`
    /// only once the socket said so (every byte read has been processed).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext buffered: give rustls more ciphertext, reading
            // the socket when what was read before is used up.
            if self.inpos == self.inlen {
                match self.sock.read(&mut self.inbuf) {
                    Ok(0) => return Ok(0),
                    Ok(n) => (self.inpos, self.inlen) = (0, n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            let mut pending = &self.inbuf[self.inpos..self.inlen];
            self.inpos += self.tls.read_tls(&mut pending)?;
            self.tls
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            // Handshake replies (and alerts) go out as soon as they exist.
            self.flush_some()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_is_the_host_part() {
        assert!(matches!(
            server_name("127.0.0.1:9000"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("[::1]:9000"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("localhost:9000"),
            Ok(ServerName::DnsName(_))
        ));
    }

    #[test]
    fn missing_ca_file_is_an_error() {
        assert!(client_config("/nonexistent/ca.pem").is_err());
    }
}
