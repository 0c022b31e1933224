from search_spaces import SearchSpace

SPARSESWEEP_PLUGIN_API = 1


def register(api):
    api.space(SearchSpace(name="dst_quick", description="a copy under a built-in's name"))
