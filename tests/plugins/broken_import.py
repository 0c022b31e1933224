SPARSESWEEP_PLUGIN_API = 1
import sparsesweep_no_such_dependency  # noqa: E402,F401
