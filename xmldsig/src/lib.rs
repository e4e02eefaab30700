//! Enveloped XML-DSig verification through libxmlsec1 (OpenSSL backend) and libxml2.
//!
//! The project's one crate with `unsafe` code: a small, safe API over the C libraries,
//! so no canonicalization is written by hand. [`verify_enveloped`]
//!
//! - refuses a DOCTYPE or entity declaration before parsing, then parses with network
//!   access and entity substitution off (and checks the parsed document has no DTD);
//! - requires exactly one `ds:Signature`, a child of the document element;
//! - verifies with the caller's certificate key as the only key: xmlsec gets no keys
//!   manager, so it neither reads keys from `KeyInfo` nor validates certificate chains
//!   (the caller checks the chain, e.g. with `custody-verifier`'s x509 module);
//! - allows only same-document `URI=""` references and a short list of transforms
//!   (enveloped-signature, C14N 1.0/1.1/exclusive, SHA-2 digests, ECDSA signatures);
//! - requires status "succeeded", exactly one `Reference` with `URI=""` and the
//!   enveloped-signature transform, so the whole document is what was signed.
//!
//! Libraries are initialised once ([`OnceLock`]); each call uses its own document,
//! key and context, freed on every path by RAII guards, so verifies may run concurrently.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::ffi::{c_char, c_int, c_uint, CStr};
use std::ptr;
use std::sync::OnceLock;
use thiserror::Error;

#[allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    missing_debug_implementations,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::indexing_slicing,
    clippy::unwrap_used
)]
mod ffi {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

/// Largest document accepted (RIMs are ~20 KiB).
pub const MAX_XML_LEN: usize = 4 << 20;
/// Largest signer certificate accepted.
pub const MAX_CERT_LEN: usize = 64 << 10;
/// The XML-DSig namespace.
pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";

/// Signature algorithm of a verified signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
}

impl SignatureAlgorithm {
    pub fn uri(self) -> &'static str {
        match self {
            Self::EcdsaSha256 => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
            Self::EcdsaSha384 => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
            Self::EcdsaSha512 => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
        }
    }
}

/// Digest algorithm of the verified reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl DigestAlgorithm {
    pub fn uri(self) -> &'static str {
        match self {
            Self::Sha256 => "http://www.w3.org/2001/04/xmlenc#sha256",
            Self::Sha384 => "http://www.w3.org/2001/04/xmldsig-more#sha384",
            Self::Sha512 => "http://www.w3.org/2001/04/xmlenc#sha512",
        }
    }
}

/// Canonicalization of `SignedInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canonicalization {
    C14n10,
    C14n11,
    ExclC14n,
}

/// What a successful verification used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub signature: SignatureAlgorithm,
    pub digest: DigestAlgorithm,
    pub canonicalization: Canonicalization,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum XmlDsigError {
    #[error("document is {0} bytes, more than {MAX_XML_LEN}")]
    TooLarge(usize),
    #[error("document is not UTF-8")]
    NotUtf8,
    #[error("document has a DOCTYPE or entity declaration (refused)")]
    Doctype,
    #[error("document is not well-formed XML")]
    Parse,
    #[error("libxmlsec1 initialisation failed: {0}")]
    Init(&'static str),
    #[error("no ds:Signature element")]
    NoSignature,
    #[error("{0} ds:Signature elements; exactly one is accepted")]
    MultipleSignatures(usize),
    #[error("ds:Signature is not a child of the document element")]
    SignatureNotEnveloped,
    #[error("signer certificate could not be loaded as a verification key")]
    Key,
    #[error("signature processing failed (malformed signature, or an algorithm, transform or URI that is not allowed)")]
    Processing,
    #[error("signature does not verify")]
    Invalid,
    #[error("{0} references signed; exactly one (URI=\"\") is accepted")]
    References(usize),
    #[error("the reference does not cover the whole document (URI must be \"\")")]
    ReferenceUri,
    #[error("the reference has no enveloped-signature transform")]
    NotEnveloped,
    #[error("unexpected transform or algorithm `{0}`")]
    Algorithm(String),
}

impl XmlDsigError {
    /// True when the input was refused before any signature processing (size, encoding,
    /// DTD, well-formedness), as opposed to a signature that does not verify.
    pub fn is_format(&self) -> bool {
        matches!(
            self,
            Self::TooLarge(_) | Self::NotUtf8 | Self::Doctype | Self::Parse
        )
    }
}

/// Refuse what this crate never parses: oversize or non-UTF-8 input, and any DOCTYPE or
/// entity declaration (an XML DTD is the door to entity expansion and external fetches).
/// Matching is ASCII case-insensitive, which refuses a little more than XML requires.
pub fn refuse_dtd(xml: &[u8]) -> Result<(), XmlDsigError> {
    if xml.len() > MAX_XML_LEN {
        return Err(XmlDsigError::TooLarge(xml.len()));
    }
    // UTF-8 only: a UTF-16 document would hide a DOCTYPE from the byte scan below.
    std::str::from_utf8(xml).map_err(|_| XmlDsigError::NotUtf8)?;
    let decl = |w: &[u8]| {
        w.first() == Some(&b'<')
            && w.get(1) == Some(&b'!')
            && (w.get(2..9).is_some_and(|k| k.eq_ignore_ascii_case(b"DOCTYPE"))
                || w.get(2..8).is_some_and(|k| k.eq_ignore_ascii_case(b"ENTITY")))
    };
    let mut rest = xml;
    while let Some(i) = rest.iter().position(|&b| b == b'<') {
        let tail = rest.get(i..).unwrap_or_default();
        if decl(tail) {
            return Err(XmlDsigError::Doctype);
        }
        rest = tail.get(1..).unwrap_or_default();
    }
    Ok(())
}

static INIT: OnceLock<Result<(), XmlDsigError>> = OnceLock::new();

/// xmlsec error reports would go to stderr; failures are reported through return codes.
unsafe extern "C" fn quiet_xmlsec(
    _file: *const c_char,
    _line: c_int,
    _func: *const c_char,
    _object: *const c_char,
    _subject: *const c_char,
    _reason: c_int,
    _msg: *const c_char,
) {
}

unsafe extern "C" fn quiet_libxml(_ctx: *mut std::ffi::c_void, _err: ffi::xmlErrorPtr) {}

fn init() -> Result<(), XmlDsigError> {
    INIT.get_or_init(|| {
        // SAFETY: called once (OnceLock) before any other libxml2/xmlsec call of this crate;
        // these are the documented initialisation calls, given valid (or null) arguments.
        unsafe {
            ffi::xmlInitParser();
            if ffi::xmlSecInit() < 0 {
                return Err(XmlDsigError::Init("xmlSecInit"));
            }
            if ffi::xmlSecCheckVersionExt(
                ffi::XMLSEC_VERSION_MAJOR as c_int,
                ffi::XMLSEC_VERSION_MINOR as c_int,
                ffi::XMLSEC_VERSION_SUBMINOR as c_int,
                ffi::xmlSecCheckVersionABICompatible,
            ) != 1
            {
                return Err(XmlDsigError::Init("library version differs from the headers"));
            }
            if ffi::xmlSecOpenSSLAppInit(ptr::null()) < 0 {
                return Err(XmlDsigError::Init("xmlSecOpenSSLAppInit"));
            }
            if ffi::xmlSecOpenSSLInit() < 0 {
                return Err(XmlDsigError::Init("xmlSecOpenSSLInit"));
            }
            // After xmlSecInit, which installs the default (stderr) reporter.
            ffi::xmlSecErrorsSetCallback(Some(quiet_xmlsec));
        }
        Ok(())
    })
    .clone()
}

/// An owned libxml2 document.
struct Doc(ffi::xmlDocPtr);

impl Drop for Doc {
    fn drop(&mut self) {
        // SAFETY: self.0 came from xmlReadMemory, is non-null and freed only here.
        unsafe { ffi::xmlFreeDoc(self.0) }
    }
}

impl Doc {
    fn parse(xml: &[u8]) -> Result<Self, XmlDsigError> {
        let len = c_int::try_from(xml.len()).map_err(|_| XmlDsigError::TooLarge(xml.len()))?;
        // No XML_PARSE_NOENT (entity substitution), DTDLOAD, DTDATTR, XINCLUDE or HUGE.
        let options = (ffi::XML_PARSE_NONET | ffi::XML_PARSE_NOERROR | ffi::XML_PARSE_NOWARNING) as c_int;
        // SAFETY: the buffer pointer and length describe `xml`, which outlives the call;
        // libxml2 copies what it keeps. The encoding is a NUL-terminated literal; forcing
        // UTF-8 matches what refuse_dtd checked. The error handler setter is per-thread.
        let doc = unsafe {
            ffi::xmlSetStructuredErrorFunc(ptr::null_mut(), Some(quiet_libxml));
            ffi::xmlReadMemory(
                xml.as_ptr().cast::<c_char>(),
                len,
                ptr::null(),
                c"UTF-8".as_ptr(),
                options,
            )
        };
        if doc.is_null() {
            return Err(XmlDsigError::Parse);
        }
        let doc = Doc(doc);
        // SAFETY: doc.0 is a valid document owned by `doc`.
        let (int_subset, ext_subset) = unsafe { ((*doc.0).intSubset, (*doc.0).extSubset) };
        if !int_subset.is_null() || !ext_subset.is_null() {
            return Err(XmlDsigError::Doctype);
        }
        Ok(doc)
    }

    fn root(&self) -> Result<ffi::xmlNodePtr, XmlDsigError> {
        // SAFETY: self.0 is a valid document; the result lives as long as it.
        let root = unsafe { ffi::xmlDocGetRootElement(self.0) };
        if root.is_null() {
            Err(XmlDsigError::Parse)
        } else {
            Ok(root)
        }
    }
}

/// An xmlsec key not yet handed to a context.
struct Key(ffi::xmlSecKeyPtr);

impl Drop for Key {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a key we own (not transferred: into_ctx nulls the pointer).
            unsafe { ffi::xmlSecKeyDestroy(self.0) }
        }
    }
}

impl Key {
    fn from_cert_der(der: &[u8]) -> Result<Self, XmlDsigError> {
        if der.is_empty() || der.len() > MAX_CERT_LEN {
            return Err(XmlDsigError::Key);
        }
        let len = c_uint::try_from(der.len()).map_err(|_| XmlDsigError::Key)?;
        // SAFETY: pointer/length describe `der`; no password or callback. Loading a key
        // from a certificate does not validate the certificate (the caller does).
        let key = unsafe {
            ffi::xmlSecOpenSSLAppKeyLoadMemory(
                der.as_ptr(),
                len as _,
                ffi::xmlSecKeyDataFormatCertDer,
                ptr::null(),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if key.is_null() {
            Err(XmlDsigError::Key)
        } else {
            Ok(Key(key))
        }
    }
}

/// An owned xmlsec signature context (which owns its key once set).
struct DSigCtx(ffi::xmlSecDSigCtxPtr);

impl Drop for DSigCtx {
    fn drop(&mut self) {
        // SAFETY: self.0 came from xmlSecDSigCtxCreate and is destroyed only here; this
        // also destroys signKey and the reference contexts.
        unsafe { ffi::xmlSecDSigCtxDestroy(self.0) }
    }
}

fn klass_eq(a: ffi::xmlSecTransformId, b: ffi::xmlSecTransformId) -> bool {
    ptr::eq(a, b)
}

/// The transform classes this crate allows, by role.
struct Allowed {
    c14n: [(ffi::xmlSecTransformId, Canonicalization); 3],
    sig: [(ffi::xmlSecTransformId, SignatureAlgorithm); 3],
    digest: [(ffi::xmlSecTransformId, DigestAlgorithm); 3],
    enveloped: ffi::xmlSecTransformId,
    /// Internal buffer xmlsec inserts before the digest (not read from the document).
    membuf: ffi::xmlSecTransformId,
}

impl Allowed {
    fn get() -> Self {
        // SAFETY: these getters return pointers to static klass structures (after init).
        unsafe {
            Self {
                c14n: [
                    (ffi::xmlSecTransformInclC14NGetKlass(), Canonicalization::C14n10),
                    (ffi::xmlSecTransformInclC14N11GetKlass(), Canonicalization::C14n11),
                    (ffi::xmlSecTransformExclC14NGetKlass(), Canonicalization::ExclC14n),
                ],
                sig: [
                    (
                        ffi::xmlSecOpenSSLTransformEcdsaSha256GetKlass(),
                        SignatureAlgorithm::EcdsaSha256,
                    ),
                    (
                        ffi::xmlSecOpenSSLTransformEcdsaSha384GetKlass(),
                        SignatureAlgorithm::EcdsaSha384,
                    ),
                    (
                        ffi::xmlSecOpenSSLTransformEcdsaSha512GetKlass(),
                        SignatureAlgorithm::EcdsaSha512,
                    ),
                ],
                digest: [
                    (
                        ffi::xmlSecOpenSSLTransformSha256GetKlass(),
                        DigestAlgorithm::Sha256,
                    ),
                    (
                        ffi::xmlSecOpenSSLTransformSha384GetKlass(),
                        DigestAlgorithm::Sha384,
                    ),
                    (
                        ffi::xmlSecOpenSSLTransformSha512GetKlass(),
                        DigestAlgorithm::Sha512,
                    ),
                ],
                enveloped: ffi::xmlSecTransformEnvelopedGetKlass(),
                membuf: ffi::xmlSecTransformMemBufGetKlass(),
            }
        }
    }

    fn find<T: Copy>(list: &[(ffi::xmlSecTransformId, T)], id: ffi::xmlSecTransformId) -> Option<T> {
        list.iter().find(|(k, _)| klass_eq(*k, id)).map(|(_, v)| *v)
    }
}

/// The klass name of a transform, for error messages.
fn klass_name(id: ffi::xmlSecTransformId) -> String {
    if id.is_null() {
        return "(none)".into();
    }
    // SAFETY: a non-null klass pointer from xmlsec points to a static klass whose `href`
    // and `name` are NUL-terminated static strings or null.
    unsafe {
        let k = &*id;
        let s = if k.href.is_null() { k.name } else { k.href };
        if s.is_null() {
            "(unnamed)".into()
        } else {
            CStr::from_ptr(s.cast::<c_char>()).to_string_lossy().into_owned()
        }
    }
}

impl DSigCtx {
    fn new(allowed: &Allowed) -> Result<Self, XmlDsigError> {
        // SAFETY: a null keys manager is allowed; the context is then keyless until set.
        let ctx = unsafe { ffi::xmlSecDSigCtxCreate(ptr::null_mut()) };
        if ctx.is_null() {
            return Err(XmlDsigError::Init("xmlSecDSigCtxCreate"));
        }
        let ctx = DSigCtx(ctx);
        // SAFETY: ctx.0 is a valid, initialised context we own; the klass pointers are
        // static. Fields are written before any processing.
        unsafe {
            let c = &mut *ctx.0;
            c.flags |= ffi::XMLSEC_DSIG_FLAGS_IGNORE_MANIFESTS;
            // Belt and braces: no keys manager means KeyInfo is never read anyway.
            c.keyInfoReadCtx.flags |= ffi::XMLSEC_KEYINFO_FLAGS_X509DATA_DONT_VERIFY_CERTS;
            // Only same-document, whole-document references.
            c.enabledReferenceUris = ffi::xmlSecTransformUriTypeEmpty as _;
            for (k, _) in &allowed.c14n {
                if ffi::xmlSecDSigCtxEnableSignatureTransform(ctx.0, *k) < 0
                    || ffi::xmlSecDSigCtxEnableReferenceTransform(ctx.0, *k) < 0
                {
                    return Err(XmlDsigError::Init("enable transform"));
                }
            }
            for (k, _) in &allowed.sig {
                if ffi::xmlSecDSigCtxEnableSignatureTransform(ctx.0, *k) < 0 {
                    return Err(XmlDsigError::Init("enable transform"));
                }
            }
            for k in allowed
                .digest
                .iter()
                .map(|(k, _)| *k)
                .chain(std::iter::once(allowed.enveloped))
            {
                if ffi::xmlSecDSigCtxEnableReferenceTransform(ctx.0, k) < 0 {
                    return Err(XmlDsigError::Init("enable transform"));
                }
            }
        }
        Ok(ctx)
    }

    fn set_key(&mut self, mut key: Key) {
        // SAFETY: ctx.0 is valid and has no key yet; ownership of the key moves to the
        // context (xmlSecDSigCtxDestroy frees it), so the guard is disarmed.
        unsafe {
            (*self.0).signKey = key.0;
        }
        key.0 = ptr::null_mut();
    }
}

fn is_dsig_signature(node: ffi::xmlNodePtr) -> bool {
    // SAFETY: node is a valid node of a live document; name and ns href are
    // NUL-terminated strings owned by the document (or null).
    unsafe {
        let n = &*node;
        if n.type_ != ffi::XML_ELEMENT_NODE || n.name.is_null() || n.ns.is_null() {
            return false;
        }
        let href = (*n.ns).href;
        !href.is_null()
            && CStr::from_ptr(n.name.cast::<c_char>()).to_bytes() == b"Signature"
            && CStr::from_ptr(href.cast::<c_char>()).to_bytes() == DSIG_NS.as_bytes()
    }
}

/// Every ds:Signature element in the tree under `root` (iterative walk, no recursion).
fn find_signatures(root: ffi::xmlNodePtr) -> Vec<ffi::xmlNodePtr> {
    let mut found = Vec::new();
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        if is_dsig_signature(node) {
            found.push(node);
        }
        // SAFETY: node is valid; children/next links are valid nodes or null.
        let mut child = unsafe { (*node).children };
        while !child.is_null() {
            // SAFETY: as above.
            unsafe {
                if (*child).type_ == ffi::XML_ELEMENT_NODE {
                    stack.push(child);
                }
                child = (*child).next;
            }
        }
    }
    found
}

/// Verify the enveloped XML-DSig signature of `xml` with the key of `signer_cert_der`
/// (DER X.509) as the only verification key. The certificate itself is not validated
/// here: the caller must check it chains to a trusted root.
pub fn verify_enveloped(xml: &[u8], signer_cert_der: &[u8]) -> Result<Verified, XmlDsigError> {
    refuse_dtd(xml)?;
    init()?;
    let doc = Doc::parse(xml)?;
    let root = doc.root()?;
    let sigs = find_signatures(root);
    let sig = match sigs.as_slice() {
        [] => return Err(XmlDsigError::NoSignature),
        [one] => *one,
        many => return Err(XmlDsigError::MultipleSignatures(many.len())),
    };
    // SAFETY: sig is a valid node of `doc`.
    if !ptr::eq(unsafe { (*sig).parent }, root) {
        return Err(XmlDsigError::SignatureNotEnveloped);
    }
    let key = Key::from_cert_der(signer_cert_der)?;
    let allowed = Allowed::get();
    let mut ctx = DSigCtx::new(&allowed)?;
    ctx.set_key(key);
    // SAFETY: ctx and sig are valid; sig belongs to `doc`, which outlives ctx's use here
    // (ctx is declared after doc, so it is dropped first).
    let ret = unsafe { ffi::xmlSecDSigCtxVerify(ctx.0, sig) };
    if ret < 0 {
        return Err(XmlDsigError::Processing);
    }
    // SAFETY: ctx.0 is valid; status was set by the verify call.
    if unsafe { (*ctx.0).status } != ffi::xmlSecDSigStatusSucceeded {
        return Err(XmlDsigError::Invalid);
    }
    inspect(&ctx, &allowed)
}

/// After a successful verify: exactly one SignedInfo reference, URI="", enveloped, and
/// only allowed algorithms were used.
fn inspect(ctx: &DSigCtx, allowed: &Allowed) -> Result<Verified, XmlDsigError> {
    // SAFETY: ctx.0 is a context on which verification succeeded; its transform pointers
    // and reference list are valid until it is destroyed (after this function).
    unsafe {
        let c = &mut *ctx.0;
        let sign_id = if c.signMethod.is_null() {
            ptr::null()
        } else {
            (*c.signMethod).id
        };
        let signature = Allowed::find(&allowed.sig, sign_id)
            .ok_or_else(|| XmlDsigError::Algorithm(klass_name(sign_id)))?;
        let c14n_id = if c.c14nMethod.is_null() {
            ptr::null()
        } else {
            (*c.c14nMethod).id
        };
        let canonicalization = Allowed::find(&allowed.c14n, c14n_id)
            .ok_or_else(|| XmlDsigError::Algorithm(klass_name(c14n_id)))?;

        let manifests = ffi::xmlSecPtrListGetSize(&mut c.manifestReferences);
        let n = ffi::xmlSecPtrListGetSize(&mut c.signedInfoReferences);
        if n != 1 || manifests != 0 {
            return Err(XmlDsigError::References((n + manifests) as usize));
        }
        let r =
            ffi::xmlSecPtrListGetItem(&mut c.signedInfoReferences, 0).cast::<ffi::xmlSecDSigReferenceCtx>();
        if r.is_null() {
            return Err(XmlDsigError::References(0));
        }
        let r = &*r;
        if r.origin != ffi::xmlSecDSigReferenceOriginSignedInfo || r.status != ffi::xmlSecDSigStatusSucceeded
        {
            return Err(XmlDsigError::Invalid);
        }
        // Absent URI (null) is application-defined: refused. Present and empty: whole doc.
        if r.uri.is_null() || *r.uri != 0 {
            return Err(XmlDsigError::ReferenceUri);
        }
        let digest_id = if r.digestMethod.is_null() {
            ptr::null()
        } else {
            (*r.digestMethod).id
        };
        let digest = Allowed::find(&allowed.digest, digest_id)
            .ok_or_else(|| XmlDsigError::Algorithm(klass_name(digest_id)))?;
        let mut enveloped = 0usize;
        let mut t = r.transformCtx.first;
        while !t.is_null() {
            let id = (*t).id;
            if klass_eq(id, allowed.enveloped) {
                enveloped += 1;
            } else if !klass_eq(id, allowed.membuf)
                && Allowed::find(&allowed.c14n, id).is_none()
                && Allowed::find(&allowed.digest, id).is_none()
            {
                return Err(XmlDsigError::Algorithm(klass_name(id)));
            }
            t = (*t).next;
        }
        if enveloped != 1 {
            return Err(XmlDsigError::NotEnveloped);
        }
        Ok(Verified {
            signature,
            digest,
            canonicalization,
        })
    }
}

#[cfg(test)]
mod tests;
