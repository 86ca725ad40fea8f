"""Host-side tools: board files, Debian package cache, cpio, ELF and module closure, freezing, images."""
