# `cmake --install` and the .deb (CPack; scripts/package.sh builds and checks
# it). The binary goes to bin/, the systemd units to lib/systemd/system (under
# /usr in the package: Debian 12 merges /usr), the
# docs and example configs to share/doc/fedge. The units read
# /etc/fedge/coordinator.toml and /etc/fedge/node.toml, which the operator
# writes (docs/DEPLOYMENT.md, "Installing the package"); the package ships no
# config of its own, so no conffile holds a key path that means nothing on
# another machine.
include(GNUInstallDirs)
install(TARGETS fedge RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES packaging/systemd/fedge-coordinator.service packaging/systemd/fedge-node.service
        DESTINATION lib/systemd/system)
install(FILES README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/docs FILES_MATCHING PATTERN "*.md")
install(DIRECTORY configs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples/configs)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME fedge)
set(CPACK_PACKAGE_VENDOR "fedge developers")
set(CPACK_PACKAGE_CONTACT "fedge developers <fedge@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "federated edge co-training and inference of LLMs")
set(CPACK_PACKAGE_DESCRIPTION
    "Edge nodes serve a Llama-family model and fine-tune LoRA adapters on private data; a coordinator combines their updates with secure aggregation over ZeroMQ; a simulator compares edge-intelligence paradigm levels.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
# Runtime dependencies from the libraries the binary links (dpkg-shlibdeps),
# so `dpkg -i` on a machine without them says which packages are missing.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "openmpi-bin")
include(CPack)
