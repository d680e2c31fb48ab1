"""Admission: who may call and how much. Plain Python, no grpc (api/admission.py is the door
that applies it to calls).

    keys.py     API keys by SHA-256 digest, compared in constant time; Caller, a verified key
                with its policy (models, metadata keys, limits)
"""
