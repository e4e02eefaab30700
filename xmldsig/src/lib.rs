//! XML-DSig verification through libxmlsec1 (in progress).
