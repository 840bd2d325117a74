"""The EUPE engine. Importing it keeps glibc from unmapping freed tensor blocks (`distill.allocator`)."""

from distill.allocator import keep_freed_blocks

keep_freed_blocks()
