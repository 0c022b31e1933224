SPARSESWEEP_PLUGIN_API = 1


def register(api):
    api.criterion("magnitude", lambda w, g, a, *, generator=None: w.abs(), needs_grad=False)
