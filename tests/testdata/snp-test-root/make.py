#!/usr/bin/env python3
"""Builds the TEST-ONLY AMD-shaped SEV-SNP chain the hostile-node tests sign reports with.

NOT AMD: a self-signed test ARK (RSA-4096, RSASSA-PSS/SHA-384, salt 48, as AMD's), a test
ASK under it, and a test VCEK (P-384) whose AMD extensions (productName, SPLs, hwID) are
copied byte for byte from the real Milan VCEK in ../../../verifier/testdata/snp
(trustee-test-vcek.der), so a real report (trustee-test-report.bin) re-signed with the
test VCEK key passes every check but the root. The verifier trusts this root only through
`[snp] test_ark = ".../ark_ask.pem"` (docs: for tests only). Re-run to regenerate:
    python3 make.py   (needs the `cryptography` package)
"""
import datetime
from pathlib import Path
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

here = Path(__file__).parent
real = x509.load_der_x509_certificate(
    (here / "../../../verifier/testdata/snp/trustee-test-vcek.der").read_bytes())
pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
end = datetime.datetime(2049, 1, 1, tzinfo=datetime.timezone.utc)


def name(cn):
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Custody tests (NOT AMD)"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Custody test root"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def ca(subject, issuer, key, signer, serial):
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(serial)
         .not_valid_before(start).not_valid_after(end)
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                        critical=True))
    return b.sign(signer, hashes.SHA384(), rsa_padding=pss)


ark_key = rsa.generate_private_key(65537, 4096)
ask_key = rsa.generate_private_key(65537, 4096)
vcek_key = ec.generate_private_key(ec.SECP384R1())
ark_name, ask_name = name("ARK-Milan-TEST"), name("SEV-Milan-TEST")
ark = ca(ark_name, ark_name, ark_key, ark_key, 1)
ask = ca(ask_name, ark_name, ask_key, ark_key, 2)
vb = (x509.CertificateBuilder().subject_name(name("SEV-VCEK")).issuer_name(ask_name)
      .public_key(vcek_key.public_key()).serial_number(3)
      .not_valid_before(start).not_valid_after(end))
for ext in real.extensions:
    if ext.oid.dotted_string.startswith("1.3.6.1.4.1.3704."):
        vb = vb.add_extension(x509.UnrecognizedExtension(ext.oid, ext.value.value), critical=False)
vcek = vb.sign(ask_key, hashes.SHA384(), rsa_padding=pss)

pem = serialization.Encoding.PEM
(here / "ark_ask.pem").write_bytes(ark.public_bytes(pem) + ask.public_bytes(pem))
(here / "ask.pem").write_bytes(ask.public_bytes(pem))
(here / "vcek.der").write_bytes(vcek.public_bytes(serialization.Encoding.DER))
(here / "vcek.p8.der").write_bytes(vcek_key.private_bytes(
    serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def crl(revoked_serials, this_update, next_update):
    """A CRL issued by the test ARK (RSASSA-PSS/SHA-384, as AMD's KDS CRLs)."""
    b = (x509.CertificateRevocationListBuilder().issuer_name(ark_name)
         .last_update(this_update).next_update(next_update))
    for s in revoked_serials:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(s)
            .revocation_date(datetime.datetime(2024, 6, 1, tzinfo=datetime.timezone.utc)).build())
    return b.sign(ark_key, hashes.SHA384(), rsa_padding=pss).public_bytes(serialization.Encoding.DER)


# CRLs for the revocation tests: none revoked, the test ASK revoked, and one past its
# next update (stale from 2024-07-01).
(here / "crl_good.der").write_bytes(crl([], start, end))
(here / "crl_ask_revoked.der").write_bytes(crl([2], start, end))
(here / "crl_stale.der").write_bytes(
    crl([], start, datetime.datetime(2024, 7, 1, tzinfo=datetime.timezone.utc)))
