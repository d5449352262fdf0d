"""A throw-away certificate authority for the tests: a CA made on the spot and the server
certificates it signs, as PEM files (python `cryptography`). Nothing here leaves the test's
temporary directory."""
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


class Leaf:
    """A server certificate: .cert (x509.Certificate), .cert_pem and .key_pem (bytes)."""

    def __init__(self, cert, key):
        self.cert = cert
        self.key = key
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self.key_pem = key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())

    @property
    def serial(self):
        return self.cert.serial_number

    @property
    def not_after(self):
        """notAfter as a unix timestamp (whole seconds)."""
        return int(self.cert.not_valid_after_utc.timestamp()) if hasattr(
            self.cert, "not_valid_after_utc") else int(
            self.cert.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp())

    def write(self, cert_path, key_path, key_mode=0o600):
        """Writes the chain (leaf, then the CA) and the key; the key file gets key_mode."""
        with open(cert_path, "wb") as f:
            f.write(self.cert_pem + self.chain_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.key_pem)
        os.chmod(key_path, key_mode)


class ThrowawayCA:
    def __init__(self, name="telehook test CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                                  False, False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def write_ca(self, path):
        with open(path, "wb") as f:
            f.write(self.pem)
        return path

    def issue(self, cn="127.0.0.1", dns=("localhost",), ips=("127.0.0.1",), days=20,
              not_before_days=-1, rsa_bits=0):
        """A server certificate for those names, valid from now + not_before_days to now +
        days (negative days: already expired). rsa_bits: an RSA key of that size, else P-256."""
        now = _now()
        key = (rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits) if rsa_bits
               else ec.generate_private_key(ec.SECP256R1()))
        sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i))
                                                 for i in ips]
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(self.name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now + datetime.timedelta(days=not_before_days))
                .not_valid_after(now + datetime.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        leaf = Leaf(cert, key)
        leaf.chain_pem = self.pem
        return leaf
