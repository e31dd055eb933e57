
Ğ€€¨±ãŸçË:
openconfig

interfaces
	interface
name	Ethernet1")
"
state

counters
	in-octets¹`""

state
oper-statusZ"UP""

state
mtuÿÿÿÿÿÿÿÿÿ*
state
description