// mvtPluginCommon.cpp - see mvtPluginCommon.h.
#include "mvtPluginCommon.h"

#include <exception>
#include <iostream>
#include <sstream>

MVT_DEPRECATION_PUSH

namespace mvt
{
namespace plugin
{

namespace
{
void logLine(char const* level, char const* where, char const* message) noexcept
{
    try
    {
        std::cerr << "[mvt_plugins] " << level << (where != nullptr ? where : "?") << ": "
                  << (message != nullptr ? message : "") << std::endl;
    }
    catch (...)
    {
        // nothing left to report with
    }
}
} // namespace

void logError(char const* where, char const* message) noexcept
{
    logLine("ERROR ", where, message);
}

void logError(char const* where, std::string const& message) noexcept
{
    logLine("ERROR ", where, message.c_str());
}

void logWarning(char const* where, std::string const& message) noexcept
{
    logLine("WARNING ", where, message.c_str());
}

std::string dimsToString(nvinfer1::Dims const& dims)
{
    std::ostringstream s;
    s << "[";
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        s << (i > 0 ? "," : "") << static_cast<int64_t>(dims.d[i]);
    }
    s << "]";
    return s.str();
}

int64_t volume(nvinfer1::Dims const& dims, int32_t begin, int32_t end) noexcept
{
    int64_t v = 1;
    for (int32_t i = begin; i < end; ++i)
    {
        v *= static_cast<int64_t>(dims.d[i]);
    }
    return v;
}

size_t elementSize(nvinfer1::DataType type) noexcept
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT: return 4;
    case nvinfer1::DataType::kHALF: return 2;
    default: return 0;
    }
}

nvinfer1::PluginField const* findField(nvinfer1::PluginFieldCollection const* fc, char const* name) noexcept
{
    if (fc == nullptr || fc->fields == nullptr)
    {
        return nullptr;
    }
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        if (fc->fields[i].name != nullptr && std::strcmp(fc->fields[i].name, name) == 0)
        {
            return &fc->fields[i];
        }
    }
    return nullptr;
}

std::string unknownFields(nvinfer1::PluginFieldCollection const* fc, std::vector<nvinfer1::PluginField> const& known)
{
    std::string out;
    if (fc == nullptr || fc->fields == nullptr)
    {
        return out;
    }
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        char const* name = fc->fields[i].name;
        bool found = false;
        for (auto const& k : known)
        {
            found = found || (name != nullptr && std::strcmp(name, k.name) == 0);
        }
        if (!found)
        {
            out += (out.empty() ? "" : ", ") + std::string(name != nullptr ? name : "(null)");
        }
    }
    return out;
}

bool readFloat32Field(nvinfer1::PluginField const& field, float& value, std::string& error)
{
    if (field.type != nvinfer1::PluginFieldType::kFLOAT32 || field.length < 1 || field.data == nullptr)
    {
        error = std::string("field '") + field.name + "' must be one FLOAT32";
        return false;
    }
    std::memcpy(&value, field.data, sizeof(float));
    return true;
}

bool readInt32Field(nvinfer1::PluginField const& field, int32_t& value, std::string& error)
{
    if (field.type != nvinfer1::PluginFieldType::kINT32 || field.length < 1 || field.data == nullptr)
    {
        error = std::string("field '") + field.name + "' must be one INT32";
        return false;
    }
    std::memcpy(&value, field.data, sizeof(int32_t));
    return true;
}

void assignNamespace(std::string& target, char const* ns, char const* where) noexcept
{
    try
    {
        target = ns != nullptr ? ns : "";
    }
    catch (std::exception const& e)
    {
        logError(where, e.what());
    }
}

void logBadNbTensors(PluginInfo const& info, char const* method) noexcept
{
    try
    {
        logError(info.where, std::string(method) + ": expects " + info.nbInputsText + " and 1 output");
    }
    catch (std::exception const& e)
    {
        logError(info.where, e.what());
    }
}

void logRegistrationFailure(char const* name, char const* version) noexcept
{
    try
    {
        logError(name, std::string("could not register the plugin creator (version ")
                + (version != nullptr ? version : "") + ", namespace \"" + kPLUGIN_NAMESPACE
                + "\") with the TensorRT plugin registry");
    }
    catch (std::exception const& e)
    {
        logError(name, e.what());
    }
}

} // namespace plugin
} // namespace mvt

MVT_DEPRECATION_POP
