"""The one owner of bankboot's on-disk state: the layout of the banks partition (docs/layout.md) and
its crash-safe writes. builder, initfs and bankctl all go through this package. It imports only the
standard library's lightest modules: the init uses it at boot."""
