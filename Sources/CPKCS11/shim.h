#ifndef COUNTERSIGN_CPKCS11_SHIM_H
#define COUNTERSIGN_CPKCS11_SHIM_H

// p11-kit's pkcs11.h in its default (CRYPTOKI_COMPAT) mode: the names of the PKCS#11 v2.40 specification.
#include <p11-kit/pkcs11.h>

// Macros built from casts do not reach Swift; these constants carry their values.
static const unsigned long CountersignCKRVendorDefined = CKR_VENDOR_DEFINED;
static const unsigned long CountersignCKUnavailableInformation = CK_UNAVAILABLE_INFORMATION;

#endif
