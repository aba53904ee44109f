// Package convert owns the one-shot conversion of an uploaded model: it
// unpacks an uploaded ZIP safely and picks the model in it, checks the
// user's conversionCommandLine against an allow-list, runs the real
// converters through a Runner (processes of the farm limited through
// prlimit, or a container per command), and checks what they made before
// it reports success. It has no HTTP, no queue and no storage: the manager's API and
// the farm's job slots call it with server-chosen paths and store what it
// returns.
//
// The converters, from Debian packages:
//   - meshes (STL, OBJ, PLY, glTF, FBX, 3MF, DAE, …) to GLB with assimp:
//     `assimp export IN OUT.glb -fglb2`;
//   - CAD (STEP, IGES, BREP) to GLB, keeping part names, colours and the
//     assembly structure, with OpenCASCADE's Draw running a Tcl script
//     made from a template (tools.go): `occt-draw -b -f convert.tcl`;
//   - a PNG thumbnail on white with f3d in a virtual X server:
//     `xvfb-run -a f3d IN --output OUT.png --resolution 640,480 --bg-color 1,1,1 …`;
//   - STL and OBJ on request, with assimp;
//   - with Job.Shattered (processShattered), one GLB per part of a CAD
//     assembly and an XML index of its tree, part names and placements,
//     from a second Draw script that walks the XDE document (shatter.go);
//     their outputs are named ShatteredDir/<file>.
//
// User text never reaches a shell or the Tcl: converters get argv, never a
// command line, and the Tcl names only server-chosen paths (the model is
// linked under a server-chosen name first). Every GLB is checked (magic,
// version 2, length, chunks, JSON) and every thumbnail decoded and found
// not blank before a conversion succeeds. A failed conversion is an *Error
// whose Reason is the HOOPS conversion server's (Conversion Error, Specify
// startPath with ZIP, Unzip Error), with a short Detail for detailedError.
//
// A converter killed for one of its limits (memory, CPU time, the
// conversion's timeout) fails the conversion with a *LimitError whose
// sentence is the detail: "converter exceeded its memory limit of 64 MiB".
//
// Outputs are made in a hidden work directory below the output directory
// and moved into it only when every step has succeeded, so a failed
// conversion leaves the output directory as it was.
package convert
