"""Media a client uploads (photos, videos): what they are, where their bytes live, who uses them.

- :mod:`offpost.media.limits`: Graph's documented limits, with their sources.
- :mod:`offpost.media.inspect`: the type, size and duration found in a file's bytes.
- :mod:`offpost.media.store`: the bytes, in a local folder or an S3-compatible bucket.
- :mod:`offpost.media.uses`: which posts and schedules publish a media.
- :mod:`offpost.media.retention`: removing uploads nobody needs any more.

docs/media.md describes the whole.
"""
