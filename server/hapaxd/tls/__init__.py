"""TLS for every listener, whatever speaks over it: the PEM files read and checked as a pair and
re-read when they change, the ssl.SSLContext the aiohttp listeners (the metrics side port, the
OpenAI-compatible HTTP door) serve with, and who a verified client certificate names. Imports
config only, no grpc or HTTP library; api/tls.py builds the gRPC port's credentials on it.

    certificates.py  CertificateFiles (read, check, re-read on change), TlsError,
                     ReloadingContext (an SSLContext whose certificate follows the files),
                     client_identity (a client certificate's subject and SANs, as grpc says them)
"""
