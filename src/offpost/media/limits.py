"""What Graph accepts, as named constants, each with the page that says so.

Uploads are checked against these at ``POST /v1/media`` (and at the end of a
resumable upload); the Reel limits are checked when a post asks for a Reel
(:func:`offpost.media.inspect.check_for_reel`). docs/media.md lists them.
"""

from __future__ import annotations

from typing import Final

KIB: Final = 1024
MIB: Final = 1024 * KIB
GIB: Final = 1024 * MIB

# --- photos ------------------------------------------------------------------------------------
# https://developers.facebook.com/docs/graph-api/reference/page/photos/
# "Facebook supports the following formats: JPEG, BMP, PNG, GIF, TIFF";
# "Files must be 4MB or smaller in size."

#: The image types offpost accepts (found in the bytes, never taken from the client).
IMAGE_TYPES: Final = ("image/jpeg", "image/png", "image/gif", "image/bmp", "image/tiff")
#: The largest photo Graph takes.
MAX_IMAGE_BYTES: Final = 4 * MIB

# --- Page videos -------------------------------------------------------------------------------
# https://developers.facebook.com/docs/graph-api/video-uploads
# "Non-Resumable upload supports video uploads that are up to 1GB and 20 minutes long."
# "Resumable uploading supports videos that are up to 10GB and 4 hours long."
# "The aspect ratio of the video must be between 9x16 and 16x9."

#: The video types offpost accepts: MP4 and QuickTime (MOV), both ISO base media files.
VIDEO_TYPES: Final = ("video/mp4", "video/quicktime")
#: The largest video Graph takes (through its resumable, chunked upload).
MAX_VIDEO_BYTES: Final = 10 * GIB
#: The longest video Graph takes (through its resumable, chunked upload).
MAX_VIDEO_DURATION_MS: Final = 4 * 60 * 60 * 1000
#: The largest video Graph takes in a single request (larger ones go in chunks).
MAX_SINGLE_REQUEST_VIDEO_BYTES: Final = 1 * GIB
#: The longest video Graph takes in a single request.
MAX_SINGLE_REQUEST_VIDEO_DURATION_MS: Final = 20 * 60 * 1000
#: The narrowest and the widest video (width / height): 9:16 to 16:9.
MIN_VIDEO_ASPECT: Final = 9 / 16
MAX_VIDEO_ASPECT: Final = 16 / 9

# --- Reels -------------------------------------------------------------------------------------
# https://developers.facebook.com/docs/video-api/guides/reels-publishing/
# Reels: 3 to 90 seconds, 9:16, at least 540x960 pixels, 24 to 60 frames per second.

REEL_MIN_DURATION_MS: Final = 3 * 1000
REEL_MAX_DURATION_MS: Final = 90 * 1000
REEL_MIN_WIDTH: Final = 540
REEL_MIN_HEIGHT: Final = 960
#: A Reel's aspect ratio (width / height).
REEL_ASPECT: Final = 9 / 16
#: How far (relative) from 9:16 a Reel may be: encoders round 1080x1920 to, say, 1080x1918.
REEL_ASPECT_TOLERANCE: Final = 0.01
REEL_MIN_FPS: Final = 24.0
REEL_MAX_FPS: Final = 60.0
#: Frame rates are averages over the track: 23.976 (24000/1001) counts as 24.
FPS_TOLERANCE: Final = 0.05
