#!/usr/bin/env python3
"""Builds the TEST-ONLY Intel-shaped DCAP chain and collateral the TDX tests sign quotes with.

NOT Intel: a self-signed test root CA (P-256, shaped like the Intel SGX Root CA), a test
PCK Platform CA under it, a test PCK certificate under that whose SGX extension
(1.2.840.113741.1.13.1: FMSPC, PCE-ID, TCB components) is copied byte for byte from the
real PCK certificate of ../../../verifier/testdata/tdx/tdx-dcap-qvl-uptodate/quote.bin,
and a test TCB Signing certificate under the root that signs the collateral. The
collateral bodies are that vector's Intel TCB info and QE identity with a 2024..2049
window, so a real quote re-signed by tests/src/tdx.rs (test attestation key, QE report
signed by the test PCK key) passes every check but the root. The verifier trusts this root
only through `TdxVerifier::with_root` (tests only). Re-run to regenerate (new keys):
    python3 make.py   (needs the `cryptography` package)
"""
import datetime
import json
import shutil
import struct
from pathlib import Path
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

here = Path(__file__).parent
base = here / "../../../verifier/testdata/tdx/tdx-dcap-qvl-uptodate"
start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
end = datetime.datetime(2049, 1, 1, tzinfo=datetime.timezone.utc)
SGX_EXT = "1.2.840.113741.1.13.1"


def real_pck_leaf():
    """The PCK leaf in the real quote (v4: header 48, TD report 584, then the signature
    data: signature, attestation key, certification data type 6 holding the QE report,
    its signature, the QE auth data and certification data type 5, the PCK chain PEM)."""
    q = (base / "quote.bin").read_bytes()
    o = 48 + 584 + 4 + 128
    ty, _ = struct.unpack_from("<HI", q, o)
    assert ty == 6
    o += 6 + 384 + 64
    (auth,) = struct.unpack_from("<H", q, o)
    o += 2 + auth
    ty, size = struct.unpack_from("<HI", q, o)
    assert ty == 5
    pem = q[o + 6:o + 6 + size].rstrip(b"\0")
    return x509.load_pem_x509_certificates(pem)[0]


def name(cn):
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Custody tests (NOT Intel)"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Custody test root"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def cert(subject, issuer, key, signer, serial, ca, path_length=None, extra=()):
    """ECDSA P-256/SHA-256 as Intel's; CAs: keyCertSign+cRLSign, others: digitalSignature
    and nonRepudiation (Intel's PCK and TCB Signing key usages)."""
    ku = (x509.KeyUsage(False, False, False, False, False, True, True, False, False) if ca
          else x509.KeyUsage(True, True, False, False, False, False, False, False, False))
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(serial)
         .not_valid_before(start).not_valid_after(end)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                        critical=False)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
         .add_extension(ku, critical=True)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True))
    for ext in extra:
        b = b.add_extension(ext, critical=False)
    return b.sign(signer, hashes.SHA256())


def p256():
    return ec.generate_private_key(ec.SECP256R1())


def pkcs8(key):
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


real = real_pck_leaf()
sgx = real.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXT))
root_key, platform_key, pck_key, tcb_key, ak_key = (p256() for _ in range(5))
root_name = name("SGX Root CA TEST")
platform_name = name("SGX PCK Platform CA TEST")
# The CN the verifier requires of the collateral signer (Intel QVL does the same); the
# OU says it is not Intel.
tcb_name = name("Intel SGX TCB Signing")
root = cert(root_name, root_name, root_key, root_key, 1, True, 1)
platform = cert(platform_name, root_name, platform_key, root_key, 2, True, 0)
PCK_SERIAL = 3
pck = cert(name("SGX PCK Certificate TEST"), platform_name, pck_key, platform_key, PCK_SERIAL,
           False, extra=[x509.UnrecognizedExtension(sgx.oid, sgx.value.value)])
tcb_signing = cert(tcb_name, root_name, tcb_key, root_key, 4, False)
assert pck.extensions.get_extension_for_oid(sgx.oid).value.value == sgx.value.value

pem = serialization.Encoding.PEM
(here / "root.pem").write_bytes(root.public_bytes(pem))
(here / "root.der").write_bytes(root.public_bytes(serialization.Encoding.DER))
# The chain as the quote's certification data (type 5) carries it: leaf, platform CA, root.
(here / "pck_chain.pem").write_bytes(b"".join(c.public_bytes(pem) for c in (pck, platform, root)))
(here / "pck.p8.der").write_bytes(pkcs8(pck_key))
(here / "ak.p8.der").write_bytes(pkcs8(ak_key))


def signed(field, body):
    """Intel PCS v4 shape: the body compact, signed (raw r||s, hex) over its exact bytes."""
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    r, s = decode_dss_signature(tcb_key.sign(text.encode(), ec.ECDSA(hashes.SHA256())))
    sig = (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()
    return '{"%s":%s,"signature":"%s"}' % (field, text, sig)


def window(body):
    body["issueDate"] = "2024-01-01T00:00:00Z"
    body["nextUpdate"] = "2049-01-01T00:00:00Z"
    return body


def crl(issuer_name, key, revoked_serials=()):
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer_name)
         .last_update(start).next_update(end))
    for s in revoked_serials:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(s)
            .revocation_date(datetime.datetime(2024, 6, 1, tzinfo=datetime.timezone.utc)).build())
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


tcb_info = window(json.loads((base / "tcb_info.pcs.json").read_bytes())["tcbInfo"])
qe_identity = window(json.loads((base / "qe_identity.pcs.json").read_bytes())["enclaveIdentity"])
revoked_info = json.loads(json.dumps(tcb_info))
for level in revoked_info["tcbLevels"] + [
        l for m in revoked_info.get("tdxModuleIdentities", []) for l in m.get("tcbLevels", [])]:
    level["tcbStatus"] = "Revoked"
chain = tcb_signing.public_bytes(pem) + root.public_bytes(pem)


def collateral(dir_name, info, pck_revoked):
    d = here / dir_name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    (d / "tcb_info.pcs.json").write_text(signed("tcbInfo", info))
    (d / "tcb_info_issuer_chain.pem").write_bytes(chain)
    (d / "qe_identity.pcs.json").write_text(signed("enclaveIdentity", qe_identity))
    (d / "qe_identity_issuer_chain.pem").write_bytes(chain)
    (d / "pck_crl.der").write_bytes(
        crl(platform_name, platform_key, [PCK_SERIAL] if pck_revoked else []))
    (d / "root_ca_crl.der").write_bytes(crl(root_name, root_key))


# Good collateral; the test PCK revoked by the PCK CRL; every TCB level Revoked.
collateral("collateral", tcb_info, False)
collateral("collateral-pck-revoked", tcb_info, True)
collateral("collateral-tcb-revoked", revoked_info, False)
